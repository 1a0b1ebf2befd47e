"""Coordination overhead per trial with 1, 2, 4 and 8 worker processes, PostgreSQL and SQLite.

Each worker runs ``autocompress.study.run_trials`` (the loop ``autocompress run`` uses: exact
trial budget, heartbeats, stale-trial retry) on a trivial objective, so all the time measured
is coordination: storage round trips, counting, sampling (random sampler). For each setting:

* ``ms_per_trial``: wall time from the first worker's start to the last one's end, per trial;
* ``worker_ms_per_trial``: summed busy time of all workers, per trial (what each trial costs);
* ``lost`` / ``duplicated``: completed trials below / above the budget (both must be 0).

Merges into ``benchmarks/results/workers.json``. Needs PostgreSQL (AUTOCOMPRESS_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/test, a user that may create databases).

    python benchmarks/workers.py [--trials 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from _common import write_results

PG = os.environ.get("AUTOCOMPRESS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def worker(url: str, name: str, n: int) -> None:
    import optuna

    from autocompress import study as st

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=st.open_storage(url), sampler=optuna.samplers.RandomSampler())

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        return x, 1 - x, x * x

    start = time.time()
    st.run_trials(study, objective, n_trials=n, poll_seconds=0.05)
    print(json.dumps({"start": start, "end": time.time()}), flush=True)


def one_setting(url: str, workers: int, trials: int) -> dict:
    import optuna
    from optuna.trial import TrialState

    from autocompress import study as st

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=st.open_storage(url), directions=["minimize"] * 3)
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", url, name, str(trials)], stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        spans.append(json.loads(out.strip().splitlines()[-1]))
    complete = len(optuna.load_study(study_name=name, storage=st.open_storage(url)).get_trials(states=(TrialState.COMPLETE,)))
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    busy = sum(s["end"] - s["start"] for s in spans)
    return {
        "ms_per_trial": 1e3 * wall / max(complete, 1),
        "worker_ms_per_trial": 1e3 * busy / max(complete, 1),
        "trials": complete,
        "lost": max(trials - complete, 0),
        "duplicated": max(complete - trials, 0),
    }


def fresh_pg_database() -> tuple[str, callable]:
    import sqlalchemy as sa

    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    name = f"ac_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return PG.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--trials", type=int, default=64)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    results: dict = {}
    pg_url, drop = fresh_pg_database()
    try:
        results["postgresql"] = {str(k): one_setting(pg_url, k, args.trials) for k in (1, 2, 4, 8)}
    finally:
        drop()
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = {str(k): one_setting(f"sqlite:///{tmp}/bench.db", k, args.trials) for k in (1, 2, 4, 8)}
    results["note"] = "trivial objective; every worker is a separate process on this machine"
    path = write_results("workers", None, results)
    print(f"{'backend':<11}{'workers':>8}{'ms/trial':>10}{'worker ms/trial':>17}{'trials':>8}{'lost':>6}{'dup':>5}")
    for backend in ("postgresql", "sqlite"):
        for k, r in results[backend].items():
            print(f"{backend:<11}{k:>8}{r['ms_per_trial']:>10.1f}{r['worker_ms_per_trial']:>17.1f}{r['trials']:>8}{r['lost']:>6}{r['duplicated']:>5}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
