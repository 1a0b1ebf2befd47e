"""Persistence: storage URLs, the typed trial record on Optuna's storage, Optuna internals in one
place, host-wide locks, and artifacts (the teacher's cache) that workers of a study share."""
