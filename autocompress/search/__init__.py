"""The search loop: one trial (``objective``) from suggestion (``space``, ``samplers``) through
de-duplication, the one builder, fidelity rungs and scoring, in a process's ``workbench``."""
