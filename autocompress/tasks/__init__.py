"""Task kinds: what the model does. Each registered kind (:mod:`~.kind`) owns its data and splits,
its metric(s) with their intervals, teacher preparation, distillation loss, the inputs latency is
timed on, whether exits attach and the export's pipeline. Sequence classification
(:mod:`~.classification`) is the built-in kind; registering it here makes ``task.kind`` find it."""

from autocompress.tasks import classification as _classification  # noqa: F401  (registers the built-in kind)
