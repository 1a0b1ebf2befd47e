"""Shared studies: several worker processes on PostgreSQL (and SQLite), faults included.

Each PostgreSQL test gets a database of its own on the server named by AUTOCOMPRESS_TEST_PG
(default postgresql://postgres@127.0.0.1:5432/test). Without a reachable server they skip, unless
AUTOCOMPRESS_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_config_dict
from optuna.trial import TrialState

from autocompress import study as st
from autocompress.store.artifacts import DBArtifactStore, fetch_teacher_cache, publish_teacher_cache, study_lock

WORKER = str(Path(__file__).with_name("worker_process.py"))
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _new_study(url: str, name: str = "shared") -> optuna.Study:
    return optuna.create_study(
        study_name=name, storage=st.open_storage(url), directions=["minimize", "minimize", "minimize"]
    )


def _workers(url: str, count: int, n_trials: int, sleep: float, name: str = "shared") -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, WORKER, url, name, str(n_trials), str(sleep)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def _wait(procs: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str, str]]:
    """Wait for every worker, draining all their pipes at once.

    Reading one worker's pipes while another's fill up would block that other worker mid-trial
    (its trial stays running) and the first would wait for it forever.
    """
    import threading

    out: list[tuple[int, str, str] | None] = [None] * len(procs)

    def drain(i: int) -> None:
        stdout, stderr = procs[i].communicate()
        out[i] = (procs[i].returncode, stdout, stderr)

    threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(procs))]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    if any(t.is_alive() for t in threads):
        for p in procs:
            p.kill()
        for t in threads:
            t.join(10)
        tails = [r[2][-1500:] for r in out if r is not None]
        pytest.fail(f"workers still running after {timeout:.0f} s; their last words: {tails}")
    return [r for r in out if r is not None]


def _states(url: str, name: str = "shared") -> dict[str, int]:
    trials = optuna.load_study(study_name=name, storage=st.open_storage(url)).get_trials(deepcopy=False)
    return {s.name: sum(t.state == s for t in trials) for s in TrialState}


def test_four_workers_complete_exactly_the_target(pg_url) -> None:
    _new_study(pg_url)
    results = _wait(_workers(pg_url, 4, n_trials=12, sleep=0.3))
    assert all(rc == 0 for rc, _, _ in results), results
    states = _states(pg_url)
    assert states["COMPLETE"] == 12  # none lost, none counted twice
    assert states["RUNNING"] == 0 and states["WAITING"] == 0
    pids = {t.user_attrs["pid"] for t in optuna.load_study(study_name="shared", storage=st.open_storage(pg_url)).trials
            if t.state == TrialState.COMPLETE}
    assert len(pids) > 1  # the work really was shared


def test_killed_worker_trial_is_failed_then_retried_by_another(pg_url) -> None:
    study = _new_study(pg_url)
    procs = _workers(pg_url, 3, n_trials=6, sleep=2.0)
    victim_pid, victim_trial = None, None
    deadline = time.time() + 60
    while victim_pid is None and time.time() < deadline:  # wait until a trial is running, then kill its worker
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "pid" in t.user_attrs:
                victim_pid, victim_trial = t.user_attrs["pid"], t.number
                break
        time.sleep(0.1)
    assert victim_pid is not None, "no trial started"
    os.kill(victim_pid, signal.SIGKILL)
    survivors = [p for p in procs if p.pid != victim_pid]
    results = _wait(survivors)
    assert all(rc == 0 for rc, _, _ in results), results
    for p in procs:
        p.wait(timeout=10)
    trials = optuna.load_study(study_name="shared", storage=st.open_storage(pg_url)).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    dead = trials[victim_trial]
    assert dead.state == TrialState.FAIL  # detected by its missing heartbeat
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == victim_trial]
    assert len(retries) == 1 and retries[0].params == dead.params
    assert retries[0].user_attrs["retry_of"] == victim_trial


def test_a_second_process_resumes_the_study(pg_url) -> None:
    _new_study(pg_url)
    assert _wait(_workers(pg_url, 1, n_trials=3, sleep=0.05))[0][0] == 0
    assert _states(pg_url)["COMPLETE"] == 3
    assert _wait(_workers(pg_url, 1, n_trials=5, sleep=0.05))[0][0] == 0
    assert _states(pg_url)["COMPLETE"] == 5


def test_several_processes_on_sqlite_do_not_crash_on_locks(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'local.db'}"
    _new_study(url)
    results = _wait(_workers(url, 3, n_trials=9, sleep=0.1))
    assert all(rc == 0 for rc, _, _ in results), [e[-400:] for _, _, e in results]
    assert not any("database is locked" in e for _, _, e in results)
    assert _states(url)["COMPLETE"] == 9


def test_study_lock_excludes_a_second_holder(pg_url) -> None:
    import threading

    order: list[str] = []
    with study_lock(pg_url, "s"):
        t = threading.Thread(target=lambda: (study_lock(pg_url, "s").__enter__(), order.append("second")))
        t.start()
        time.sleep(0.5)
        order.append("first released")
    t.join(timeout=10)
    assert order == ["first released", "second"]


def test_cache_entry_published_once_and_fetched_elsewhere(pg_url, tmp_path) -> None:
    study = _new_study(pg_url)
    entry = tmp_path / "a" / "teacher-abc"
    entry.mkdir(parents=True)
    (entry / "weights.bin").write_bytes(os.urandom(4096))
    store = DBArtifactStore(pg_url)
    assert publish_teacher_cache(study, store, entry)
    assert not publish_teacher_cache(study, store, entry)  # once per study
    other = tmp_path / "b"
    assert fetch_teacher_cache(optuna.load_study(study_name="shared", storage=st.open_storage(pg_url)), store, other) == ["teacher-abc"]
    assert (other / "teacher-abc" / "weights.bin").read_bytes() == (entry / "weights.bin").read_bytes()
    assert fetch_teacher_cache(study, store, other) == []  # already here


def test_two_workers_starting_together_fine_tune_the_teacher_once(pg_url, tiny_model_dir, tiny_csv, tmp_path) -> None:
    cfg = tiny_config_dict(tiny_model_dir, tiny_csv, search={"trials": 3, "sampler": "random", "seed": 0})
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(cfg))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "autocompress.cli", "-v", "run", str(space), "--storage", pg_url,
             "--cache-dir", str(tmp_path / f"cache-{i}")],  # two machines: nothing shared but the database
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )
        for i in range(2)
    ]
    results = _wait(procs, timeout=600)
    assert all(rc == 0 for rc, _, _ in results), [e[-800:] for _, _, e in results]
    logs = [e for _, _, e in results]
    assert sum("fine-tuning the teacher" in e for e in logs) == 1
    assert sum("using the teacher shared by another worker" in e for e in logs) == 1
    assert _states(pg_url, "tiny")["COMPLETE"] == 3
    study = optuna.load_study(study_name="tiny", storage=st.open_storage(pg_url))
    assert "teacher" in study.user_attrs and len(study.user_attrs["shared_cache"]) == 1


class _Proxy:
    """A TCP proxy to the database that can be cut (every connection dropped) and restored."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target = ("127.0.0.1", target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.conns: list = []
        self.server = None
        import threading

        self.lock = threading.Lock()  # a connection accepted while the proxy is being cut is cut too

    def start(self) -> None:
        import socket
        import threading

        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(64)
        server = self.server

        def pump(a, b) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.close()
                    except OSError:
                        pass

        def accept() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                with self.lock:
                    if self.server is not server:  # cut meanwhile: a restarted database refuses it
                        client.close()
                        return
                    upstream = socket.create_connection(self.target)
                    self.conns += [client, upstream]
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def cut(self) -> None:
        import socket

        with self.lock:
            # shutdown wakes the thread blocked in accept(); close alone would leave the listener
            # alive in the kernel until a client came, and the restart could not bind the port again
            try:
                self.server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.server.close()
            self.server = None
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []


def _via_proxy(url: str, proxy: _Proxy) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def test_workers_ride_out_a_database_restart(pg_url) -> None:
    from sqlalchemy.engine import make_url

    proxy = _Proxy(make_url(pg_url).port or 5432)
    proxy.start()
    url = _via_proxy(pg_url, proxy)
    study = _new_study(pg_url)
    # Trials of 1 s: when the cut comes after two of eight, each worker still has seconds of work
    # that must cross the 4 s outage (with shorter trials a loaded machine could finish first).
    procs = _workers(url, 2, n_trials=8, sleep=1.0)
    deadline = time.time() + 120
    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proxy.cut()  # the database "restarts": every connection drops, new ones are refused
    before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    time.sleep(4)
    proxy.start()
    results = _wait(procs, timeout=180)
    logs = [e[-600:] for _, _, e in results]
    assert all(rc == 0 for rc, _, _ in results), logs
    assert before < 8, f"all trials ended before the outage ({before}); nothing was tested"
    assert any("storage unreachable" in e for _, _, e in results), logs  # they noticed, waited, went on
    assert _states(pg_url)["COMPLETE"] == 8


def test_a_database_that_stays_down_ends_the_worker_with_a_clear_error(pg_url) -> None:
    from sqlalchemy.engine import make_url

    from autocompress.errors import StorageError

    proxy = _Proxy(make_url(pg_url).port or 5432)
    proxy.start()
    url = make_url(_via_proxy(pg_url, proxy)).set(password="s3cret").render_as_string(hide_password=False)
    study = optuna.load_study(study_name=_new_study(pg_url).study_name, storage=st.open_storage(url))
    proxy.cut()
    start = time.time()
    with pytest.raises(StorageError) as info:
        st.run_trials(study, lambda t: (0.0, 0.0, 0.0), n_trials=3, outage_seconds=3)
    assert time.time() - start < 60
    assert "unreachable" in str(info.value) and "s3cret" not in str(info.value)
    assert _states(pg_url)["COMPLETE"] == 0


def test_trial_states_see_a_running_trial_that_another_worker_created(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    mine = _new_study(url)
    mine.get_trials()  # this process has read the (empty) study once
    other = optuna.load_study(study_name="shared", storage=st.open_storage(url))
    running = other.ask()  # another worker starts a trial ...
    later = other.ask()
    other.tell(later, state=TrialState.PRUNED)  # ... and a newer one already finished
    states = st.trial_states(mine)
    assert states[running.number] == TrialState.RUNNING and states[later.number] == TrialState.PRUNED


def test_a_trial_that_never_sent_a_heartbeat_is_failed_and_queued_again(tmp_path) -> None:
    """A trial created just as the connection dropped has no heartbeat: it must not block the study."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = _new_study(url)
    orphan = study.ask()  # created, but its worker never beat
    time.sleep(0.2)
    assert st.fail_orphaned_trials(study, grace_seconds=60) == [], "a young trial is left alone"
    assert st.fail_orphaned_trials(study, grace_seconds=0.1) == [orphan.number]
    states = _states(url)
    assert states["FAIL"] == 1 and states["WAITING"] == 1 and states["RUNNING"] == 0
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    assert "before its first heartbeat" in failed.user_attrs["fail_reason"]
    done = st.run_trials(study, lambda t: (t.suggest_float("x", 0, 1), 0.0, 0.0), n_trials=2, poll_seconds=0.1)
    assert done.completed == 2
