"""Settings as frozen, validated, versioned data: the compression plan, the study config, the device
profiles (and the bundled profile files); every reader of an older stored format lives here too
(``legacy``)."""
