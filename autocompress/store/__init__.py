"""Persistence: storage URLs, the typed trial record and study record on Optuna's storage (with the
typed figures they hold), Optuna internals in one place, host-wide locks, and artifacts (the
teacher's cache) that workers of a study share."""
