"""How far the latency figures can be trusted, on MiniLM (batch 1, 128 tokens, 2 threads).

(a) repeatability: one candidate (50 % heads and FFN + int8) measured against the teacher in 5
    separate processes; coefficient of variation of the 5 speedups (target ≤ 5 %).
(b) predictor accuracy: the cost model is calibrated on one set of plans, then predicts held-out
    plans (other random plans, never used for the fit); share predicted within ±15 % of measured
    (target ≥ 90 %). The machine drifts by 10–20 % over minutes, which no prediction can know, so
    both sides are put on one clock: measured ms = the plan's ratio to the teacher in its own
    rounds × the teacher's median over the whole benchmark; predicted ms = the model's prediction
    for the plan × (that same teacher median / the model's prediction for the teacher). The raw,
    unnormalised comparison is reported beside it.
(c) roofline efficiency: the roofline bound (each op at the slower of this host's measured GEMM
    peak and copy bandwidth) divided by the measured latency, for the teacher and the candidates.

Also records what the calibrated model predicts for the bundled predicted profiles, and
(``task_lengths``) each uniform baseline's and a front member's speedup measured on the bundled
default's own eval tweets at batch 1 (profile ``cpu-2t-task``) beside its speedup at 128 tokens
(``cpu-2t``), with the seconds each measurement took; and (``onnxruntime``) each plan's speedup in
PyTorch and in ONNX Runtime at 128 tokens, each against the teacher in the same runtime, with the
seconds the candidate's ONNX export took. Merges its sections into ``benchmarks/results/latency.json``
(the ``early_exit`` section ``early_exit.py`` writes there stays); run it alone on the machine (about
5 minutes on 2 cores). Models are random-weight MiniLMs shaped by ``autocompress.ops.apply_plan``: any
plan, ``--plan FILE.yaml`` (an export's ``plan.yaml``) included, with a kept vocabulary counted on the
default study's train tweets; exit heads are untrained there, so their timing is not a trained model's.

    python benchmarks/latency.py [--heldout 30] [--runs 5]
    python benchmarks/latency.py --only task_lengths   # that section alone, merged into the file
    python benchmarks/latency.py --only onnxruntime --plan export/plan.yaml   # also a stored plan
    python benchmarks/latency.py --only studies        # two searches of the default, ~35 minutes

(``studies``) the bundled default searched twice, identical but for the latency objective:
``cpu-2t-task`` (PyTorch) and ``ort-2t-task`` (each candidate exported and timed in ONNX Runtime).
Each study's fastest trial within 1 point (by its own objective, ``--pick "fastest with accuracy
drop <= 1.0"``) is exported with ``--onnx``; both ONNX models are then timed in ONNX Runtime
against the teacher's ONNX model in one process, on the eval tweets at their own lengths, in
alternating measurements.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import shutil
import subprocess
import sys

import time
from pathlib import Path

import torch

from _common import machine, plan_files, read_results, shaped, today, write_results
from autocompress.tasks.batches import encode
from autocompress.schema.config import load_config
from autocompress.tasks.data import load_task
from autocompress.latency.cost import model_costs
from autocompress.latency.inputs import task_inputs
from autocompress.latency.measure import example_inputs, measure_pair, measure_profile, measurement_lock
from autocompress.latency.predict import calibrate, calibration_plans, predict_ms, roofline_ms
from autocompress.schema.profile import DeviceProfile, load_profile
from autocompress.models.adapters import load_classifier, load_tokenizer
from autocompress.schema.plan import CompressionPlan

THREADS, BATCH, SEQ = 2, 1, 128
PROFILE = DeviceProfile(name="cpu-2t", threads=THREADS, batch_size=BATCH, seq_len=SEQ, warmup=20, repeats=60,
                        max_repeats=240, max_spread=0.05)


def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_classifier("bundled:all-MiniLM-L6-v2", num_labels=3).eval()


def candidate_plan(n: int) -> CompressionPlan:
    return CompressionPlan.uniform(n, heads=0.5, ffn=0.5, bits=8)


SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "tweets.yaml"


def shape(base: torch.nn.Module, plan: CompressionPlan, *, bits: bool = True) -> torch.nn.Module:
    """``base`` compressed by ``plan`` (a kept vocabulary counted on the default study's train tweets)."""
    return shaped(base, plan, vocabulary_from=SPACE, bits=bits)


def one_run() -> None:
    """Child process of (a): print one speedup."""
    base = teacher()
    cand = shape(base, candidate_plan(base.config.num_hidden_layers))
    r = measure_pair(base, cand, PROFILE, inputs=example_inputs(BATCH, SEQ, base.config.vocab_size))
    print(json.dumps({"speedup": r.speedup, "rounds": r.rounds, "noisy": r.noisy}))


def repeatability(runs: int) -> dict:
    speedups = []
    for i in range(runs):
        out = subprocess.run([sys.executable, __file__, "--one-run"], capture_output=True, text=True, check=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        logging.info("run %d: %.3f× (%d rounds)", i + 1, rec["speedup"], rec["rounds"])
        speedups.append(rec)
    s = [r["speedup"] for r in speedups]
    return {"runs": speedups, "mean_speedup": statistics.mean(s), "cv": statistics.stdev(s) / statistics.mean(s)}


def measured_ms(base: torch.nn.Module, model: torch.nn.Module) -> tuple[float, float]:
    r = measure_pair(base, model, PROFILE, inputs=example_inputs(BATCH, SEQ, base.config.vocab_size), lock=False)
    return r.ratio * r.baseline_ms, r.baseline_ms


def heldout_plans(n_layers: int, count: int) -> list[CompressionPlan]:
    fitted = {p for p in calibration_plans(n_layers, 24, seed=0)}
    out = [p for p in calibration_plans(n_layers, count + 8, seed=12345)[4:] if p not in fitted]
    return out[:count]


def front_plan(n: int) -> CompressionPlan:
    """The kind of plan the bundled default's fronts hold within 1 point: 3 of 6 layers kept, half
    the heads and FFN neurons of each (measured as a front member in the default study)."""
    return CompressionPlan.uniform(n, keep=[0, 2, 4], heads=0.5, ffn=0.5)


def compared_plans(n: int, extra: dict[str, CompressionPlan] | None = None) -> dict[str, CompressionPlan]:
    """The three uniform baselines a study seeds, and a front member (and any ``extra`` plans)."""
    return {"int8": CompressionPlan.uniform(n, bits=8), "prune50": CompressionPlan.uniform(n, heads=0.5, ffn=0.5),
            "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2))), "front_3l_50": front_plan(n),
            **(extra or {})}


def task_lengths(base: torch.nn.Module, extra: dict[str, CompressionPlan] | None = None) -> dict:
    """Each plan's speedup on the default task's own eval texts and at 128 tokens, same process."""
    cfg = load_config(SPACE)
    task = load_task(cfg.task)
    data = encode(load_tokenizer(cfg.model.source), task.eval, cfg.task.max_length)
    on_task, fixed = load_profile("cpu-2t-task"), load_profile("cpu-2t")
    sample = task_inputs(data)
    rows = []
    for name, plan in compared_plans(base.config.num_hidden_layers, extra).items():
        model = shape(base, plan)
        start = time.perf_counter()
        lt = measure_profile(base, model, on_task, vocab_size=base.config.vocab_size, task=sample)  # the default's 8 tweets
        mid = time.perf_counter()
        lf = measure_profile(base, model, fixed, vocab_size=base.config.vocab_size)
        end = time.perf_counter()
        rows.append({"name": name, "plan": plan.describe(), "speedup_task_lengths": lt.speedup, "speedup_128": lf.speedup,
                     "teacher_ms_task_lengths": lt.baseline_ms, "teacher_ms_128": lf.baseline_ms,
                     "rounds_task_lengths": lt.to_dict()["rounds"], "rounds_128": lf.to_dict()["rounds"],
                     "seconds_task_lengths": mid - start, "seconds_128": end - mid})
        logging.info("%-12s task lengths %.2fx (%.1f s), 128 tokens %.2fx (%.1f s)", name, lt.speedup, mid - start,
                     lf.speedup, end - mid)
    facts = sample.sample(on_task.task_samples).facts
    return {"plans": rows, "space": "search_spaces/tweets.yaml", "lengths": facts["lengths"],
            "eval_examples": facts["of_examples"], "median_tokens": facts["median_tokens"], "p90_tokens": facts["p90_tokens"],
            "profiles": {"task_lengths": on_task.model_dump(mode="json"), "fixed": fixed.model_dump(mode="json")}}


def onnxruntime_rows(base: torch.nn.Module, extra: dict[str, CompressionPlan] | None = None) -> dict:
    """Each plan's speedup in PyTorch and in ONNX Runtime (each against the teacher in the same
    runtime, profile ``cpu-2t``), and what exporting the candidate cost."""
    from autocompress.latency.runtimes.ort import measure_onnxruntime, teacher_session
    from autocompress.latency.runtimes.onnx_model import float_part

    torch_profile = load_profile("cpu-2t")
    ort_profile = torch_profile.model_copy(update={"backend": "onnxruntime", "name": "cpu-2t-onnxruntime"})
    ort_teacher = teacher_session(base, ["input_ids", "attention_mask"])
    n = base.config.num_hidden_layers
    plans = {**compared_plans(n), "front_3l_50_int8": CompressionPlan.uniform(n, keep=[0, 2, 4], heads=0.5, ffn=0.5, bits=8),
             **(extra or {})}
    rows = []
    for name, plan in plans.items():
        float_model = shape(base, float_part(plan))
        model = shape(base, plan)
        lt = measure_profile(base, model, torch_profile, vocab_size=base.config.vocab_size)
        lo = measure_onnxruntime(ort_teacher, float_model, plan, ort_profile)
        rows.append({"name": name, "plan": plan.describe(), "speedup_torch": lt.speedup, "speedup_onnxruntime": lo.speedup,
                     "teacher_ms_torch": lt.baseline_ms, "teacher_ms_onnxruntime": lo.baseline_ms,
                     "export_seconds": lo.to_dict()["export_seconds"]})
        logging.info("%-16s PyTorch %.2fx   ONNX Runtime %.2fx (export %.1f s)", name, lt.speedup, lo.speedup,
                     rows[-1]["export_seconds"])
    return {"plans": rows, "profile": torch_profile.model_dump(mode="json"),
            "teacher_export_seconds": ort_teacher.export_seconds}


STUDY_PROFILES = {"torch": "cpu-2t-task", "onnxruntime": "ort-2t-task"}
PICK = "fastest with accuracy drop <= 1.0"


def _cli(*args: str) -> None:
    """``autocompress ARGS`` in a child process (as a user runs it); its output goes to this log."""
    subprocess.run([sys.executable, "-c", "from autocompress.cli import main; main()", *args], check=True)


def _study_facts(name: str, url: str) -> dict:
    """How a study went: trials, their durations, and (ONNX Runtime profile) each candidate's export time."""
    import optuna

    from autocompress.store import record

    s = optuna.load_study(study_name=name, storage=url)
    done = [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]
    recs = [record.read(t) for t in done]
    exports = [r.latency.export_seconds for r in recs if r.latency and r.latency.export_seconds is not None]
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    ended = [t for t in s.trials if t.datetime_complete is not None]
    search = (max(t.datetime_complete for t in ended) - min(t.datetime_start for t in ended)).total_seconds()
    return {"trials_complete": len(done), "trials_total": len(s.trials), "search_seconds": search,
            "median_trial_seconds": statistics.median(seconds) if seconds else None,
            "median_export_seconds": statistics.median(exports) if exports else None, "exports_timed": len(exports)}


def backend_studies(workdir: Path, rounds: int, trials: int | None = None, seed: int | None = None) -> dict:
    """Search the default with each backend's profile, export each front's fastest member within 1
    point, and time both exports in ONNX Runtime against the teacher, alternating. `seed` replaces
    the space's search seed (the sampler's; data, teacher and baselines stay the same)."""
    import yaml

    from autocompress.latency.runtimes.ort import measure_runners, teacher_session
    from autocompress.latency.runtimes.onnx_model import OnnxRunner
    from autocompress.search.workbench import prepare

    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "cache"
    space = yaml.safe_load(SPACE.read_text())
    if seed is not None:
        space["search"] = {**space["search"], "seed": seed}
    seed = space["search"]["seed"]
    tag = "" if seed == 0 else f"-seed{seed}"  # seed 0 keeps the names the first results used
    studies: dict[str, dict] = {}
    for backend, profile in STUDY_PROFILES.items():
        name, url, out = f"latency-{backend}{tag}", f"sqlite:///{workdir / backend}{tag}.db", workdir / f"export-{backend}{tag}"
        path = workdir / f"{backend}{tag}.yaml"
        path.write_text(yaml.safe_dump({**space, "name": name, "profile": profile}, sort_keys=False))
        _cli("run", str(path), "--storage", url, "--cache-dir", str(cache), *(["--trials", str(trials)] if trials else []))
        if out.exists():
            shutil.rmtree(out)
        _cli("export", name, "--pick", PICK, "--onnx", "-o", str(out), "--storage", url, "--cache-dir", str(cache))
        metrics = json.loads((out / "metrics.json").read_text())
        studies[backend] = {"study": name, "profile": profile, **_study_facts(name, url),  # from the storage: a resumed study counts whole
                            "picked": metrics, "config": path, "export": out}
        logging.info("%s study: %.0f s; picked trial %s", backend, studies[backend]["search_seconds"], metrics["trial"])

    cfg = load_config(studies["torch"]["config"])
    bench = prepare(cfg, cache)
    sample = task_inputs(bench.eval)
    ort_profile = load_profile("ort-2t-task")
    runners = {b: OnnxRunner(Path(s["export"]) / "model.onnx", threads=ort_profile.threads) for b, s in studies.items()}
    ort_teacher = teacher_session(bench.teacher.model, runners["torch"].inputs)
    measured: dict[str, list] = {b: [] for b in studies}
    for i in range(rounds):  # alternate which goes first: the machine drifts over minutes
        for b in (list(studies) if i % 2 == 0 else list(reversed(studies))):
            r = measure_runners(ort_teacher.runner(ort_profile.threads), runners[b], ort_profile,
                                vocab_size=int(bench.teacher.model.config.vocab_size), task=sample)
            measured[b].append(r)
            logging.info("round %d: %s study's pick in ONNX Runtime %.2fx", i, b, r.speedup)

    rows = {}
    for b, s in studies.items():
        m, speedups = s["picked"], [r.speedup for r in measured[b]]
        rows[b] = {
            "study": s["study"], "objective_profile": s["profile"],
            **{k: s[k] for k in ("trials_complete", "trials_total", "search_seconds", "median_trial_seconds", "median_export_seconds",
                                 "exports_timed")},
            "picked_trial": m["trial"], "plan": m["plan"], "accuracy_drop_pt": m["trial_figures"]["accuracy_drop_pt"],
            "onnx_accuracy": m["onnx"]["accuracy"], "onnx_bytes": m["onnx"].get("bytes"),
            "speedup_own_objective": m["trial_figures"]["speedup"],
            "speedup_onnxruntime_task": statistics.median(speedups), "speedup_onnxruntime_runs": speedups,
            "teacher_ms_onnxruntime": statistics.median(r.baseline_ms for r in measured[b]),
        }
    ort, torch_row = rows["onnxruntime"]["speedup_onnxruntime_task"], rows["torch"]["speedup_onnxruntime_task"]
    return {"studies": list(rows.values()), "space": "search_spaces/tweets.yaml", "search_seed": seed, "pick": PICK,
            "timed_on": ort_profile.name,
            "target": "the ONNX Runtime study's pick, measured in ONNX Runtime, >= the PyTorch study's pick measured there",
            "ratio": ort / torch_row, "met": ort >= torch_row}


def _by_seed(old: dict | None, new: dict) -> list[dict]:
    """One line per search seed run so far: a later run replaces its own seed's line, keeps the others."""
    def line(run: dict) -> dict:
        return {"seed": run.get("search_seed", 0), "ratio": run["ratio"], "met": run["met"], "date": run.get("date"),
                "studies": run["studies"]}
    lines = {}
    if old:
        lines = {x["seed"]: x for x in old.get("by_seed", [])} or {old.get("search_seed", 0): line(old)}
    lines[new["search_seed"]] = line(new)
    return [lines[k] for k in sorted(lines)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--heldout", type=int, default=30)
    ap.add_argument("--only", choices=["task_lengths", "onnxruntime", "studies"], help="run this section alone and merge it into the results file")
    ap.add_argument("--workdir", type=Path, default=Path("studies/latency-bench"), help="studies: where the two studies, their teacher and exports go")
    ap.add_argument("--trials", type=int, help="studies: complete trials per study (default: the space's search.trials)")
    ap.add_argument("--rounds", type=int, default=6, help="studies: ONNX Runtime measurements of each pick, alternating")
    ap.add_argument("--seed", type=int, help="studies: the sampler's seed (default: the space's); each seed's outcome is kept")
    ap.add_argument("--plan", type=Path, action="append", metavar="FILE.yaml",
                    help="task_lengths, onnxruntime: also time this stored plan (repeatable)")
    args = ap.parse_args()
    extra = plan_files(args.plan)
    if args.one_run:
        one_run()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.only:
        if args.only == "studies":
            new = backend_studies(args.workdir, args.rounds, args.trials, args.seed)
            new["by_seed"] = _by_seed(read_results("latency").get("studies"), {**new, "date": today()})
            new["met_every_seed"] = all(x["met"] for x in new["by_seed"])  # `met` above is this seed's alone
            path = write_results("latency", "studies", new)
            for r in new["studies"]:
                print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
            print(f"written {path}")
            return
        section = task_lengths if args.only == "task_lengths" else onnxruntime_rows
        new = section(teacher(), extra)
        path = write_results("latency", args.only, new)
        for r in new["plans"]:
            print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{v}" for k, v in r.items() if k != "plan"))
        print(f"written {path}")
        return
    rep = repeatability(args.runs)
    logging.info("(a) repeatability: CV of the speedup %.2f%%", 100 * rep["cv"])

    base = teacher()
    n = base.config.num_hidden_layers
    cal = calibrate(base, lambda p: shape(base, p), threads=THREADS, shapes=[(BATCH, SEQ)],
                    plans=calibration_plans(n, 24, seed=0))
    rows = []
    with measurement_lock():
        torch.set_num_threads(THREADS)
        for plan in heldout_plans(n, args.heldout):
            model = shape(base, plan)
            r = measure_pair(base, model, PROFILE, inputs=example_inputs(BATCH, SEQ, base.config.vocab_size), lock=False)
            rows.append({"plan": plan.describe(), "ratio": r.ratio, "raw_measured_ms": r.ratio * r.baseline_ms,
                         "baseline_ms": r.baseline_ms, "raw_predicted_ms": predict_ms(model, cal, BATCH, SEQ)})
    teacher_ms = statistics.median(r["baseline_ms"] for r in rows)
    teacher_pred = predict_ms(base, cal, BATCH, SEQ)
    for r in rows:
        r["measured_ms"] = r["ratio"] * teacher_ms
        r["predicted_ms"] = r["raw_predicted_ms"] * teacher_ms / teacher_pred
        r["error"] = r["predicted_ms"] / r["measured_ms"] - 1
        r["raw_error"] = r["raw_predicted_ms"] / r["raw_measured_ms"] - 1
        logging.info("%-60s measured %6.2f ms, predicted %6.2f ms (%+.1f%%; raw %+.1f%%)", r["plan"][:60],
                     r["measured_ms"], r["predicted_ms"], 100 * r["error"], 100 * r["raw_error"])
    within = sum(abs(r["error"]) <= 0.15 for r in rows) / len(rows)
    within_raw = sum(abs(r["raw_error"]) <= 0.15 for r in rows) / len(rows)
    logging.info("(b) predictor: %.0f%% of %d held-out plans within ±15%%", 100 * within, len(rows))

    roof = []
    with measurement_lock():
        for name, plan in {"teacher": CompressionPlan.uniform(n), "prune50_int8": candidate_plan(n),
                           "half_depth": CompressionPlan.uniform(n, keep=list(range(0, n, 2)))}.items():
            model = base if name == "teacher" else shape(base, plan)
            meas, _ = measured_ms(base, model)
            bound = roofline_ms(model_costs(model, BATCH, SEQ), cal.peaks)
            roof.append({"model": name, "measured_ms": meas, "roofline_ms": bound, "efficiency": bound / meas})
            logging.info("(c) %s: roofline %.2f ms / measured %.2f ms = %.0f%%", name, bound, meas, 100 * bound / meas)

    predicted = {}
    for pname in ("rpi4", "phone-bigcore"):
        prof = load_profile(pname)
        t_ms = predict_ms(base, cal, BATCH, SEQ, prof)
        c_ms = predict_ms(shape(base, candidate_plan(n)), cal, BATCH, SEQ, prof)
        predicted[pname] = {"teacher_ms": t_ms, "prune50_int8_ms": c_ms, "speedup": t_ms / c_ms, "kind": "predicted"}

    out = {
        "repeatability_cv": rep["cv"],
        "predictor_within_15pct": within,
        "predictor_within_15pct_raw": within_raw,
        "n_heldout_plans": len(rows),
        "roofline_efficiency": next(r["efficiency"] for r in roof if r["model"] == "teacher"),
        "profile": PROFILE.model_dump(mode="json"),
        "repeatability": rep,
        "calibration": cal.to_dict(),
        "heldout": rows,
        "predictor_median_abs_error": statistics.median(abs(r["error"]) for r in rows),
        "roofline": roof,
        "predicted_devices": predicted,
        "task_lengths": {**task_lengths(base, extra), "machine": machine(), "date": today()},
        "onnxruntime": {**onnxruntime_rows(base, extra), "machine": machine(), "date": today()},
    }
    path = write_results("latency", None, out)  # early_exit and studies, written by other runs, stay
    print(f"(a) repeatability: CV {100 * rep['cv']:.2f}% over {args.runs} runs (target ≤ 5%)")
    print(f"(b) predictor: {100 * within:.0f}% of {len(rows)} held-out plans within ±15% (target ≥ 90%), "
          f"median |error| {100 * out['predictor_median_abs_error']:.1f}%; without drift normalisation "
          f"{100 * within_raw:.0f}%")
    print(f"(c) roofline efficiency of the teacher: {100 * out['roofline_efficiency']:.0f}%")
    for k, v in predicted.items():
        print(f"    predicted on {k}: teacher {v['teacher_ms']:.1f} ms, candidate {v['speedup']:.2f}× faster")
    print(f"written {path}")


if __name__ == "__main__":
    main()
