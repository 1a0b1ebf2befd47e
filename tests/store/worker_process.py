"""A worker process for the shared-study tests: a cheap objective run by ``study.run_trials``.

    python tests/store/worker_process.py URL STUDY N_TRIALS SLEEP_SECONDS [OUTAGE_SECONDS]
"""

from __future__ import annotations

import os
import sys
import time

from autocompress import study as st


def objective(sleep: float):
    def run(trial):
        trial.set_user_attr("pid", os.getpid())
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(sleep)
        return x, 1.0 - x, x * x

    return run


def main() -> None:
    url, name, n, sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    outage = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    storage = st.open_storage(url, heartbeat_seconds=1, grace_seconds=3)
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    result = st.run_trials(study, objective(sleep), n_trials=n, poll_seconds=0.3, outage_seconds=outage)
    print(f"done {result.completed}/{result.target}", flush=True)


if __name__ == "__main__":
    main()
