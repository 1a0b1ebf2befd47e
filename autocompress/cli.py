"""Command line: parse, call the library, show progress; errors become one line and exit 2."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autocompress.errors import AutocompressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Search compression plans (depth, pruning, bit-widths) for a Hugging Face encoder classifier.",
)
out = Console()
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import optuna

    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR if not (verbose or debug) else optuna.logging.INFO)
    optuna.logging.disable_propagation()
    if not debug:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # torch's own notice about its quantised-tensor API, raised inside quantize_dynamic
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*", category=UserWarning)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


StorageOpt = Annotated[
    Optional[str],
    typer.Option("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)."),
]


SamplerOpt = Annotated[
    Optional[str],
    typer.Option("--sampler", help="tpe, nsga2, gp or random; overrides search.sampler (each trial records its sampler)."),
]


def _storage_for(name: str, storage: str | None) -> str:
    from autocompress.study import default_storage

    return storage or default_storage(name)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _best_text(study) -> str:
    """The study's best so far: its best metric, and its fastest trial within 1 point of the teacher
    (a perplexity study: within its own budget, in perplexity)."""
    from autocompress.report.quality import Quality
    from autocompress.study.listing import best_so_far, metric_scale

    scale = metric_scale(study)
    q = Quality(scale)
    budget = (scale.max_drop or 1.0) if q.own_unit else 1.0
    best = best_so_far(study, budget)
    if best.best_percent is None:
        return ""
    if q.own_unit:
        fast = f", within {q.budget_words(budget)}: {best.fastest_within:.2f}×" if best.fastest_within is not None else ""
        return f"best {q.describe(best.best_percent, best.best_natural)}{fast}"
    fast = f", within 1 pt: {best.fastest_within:.2f}×" if best.fastest_within is not None else ""
    return f"best {best.metric} {best.best_percent:.1f}%{fast}"


def _trial_line(study, trial, done: int, target: int, elapsed: float) -> str:
    """One line for a trial that ended (what the study prints per trial where no bar can be drawn)."""
    from autocompress.store import record

    from autocompress.report.quality import Quality
    from autocompress.study.listing import metric_scale

    r = record.read(trial)
    head = f"trial {trial.number} [{done}/{target} full, {elapsed / 60:.1f} min]"
    if trial.state.name == "COMPLETE" and r.score is not None:
        q = Quality(metric_scale(study))
        if q.own_unit:
            figure = q.describe(100 * r.score.value, r.metric.natural if r.metric is not None else None)
        else:
            drop = f" (drop {r.accuracy_drop:+.2f})" if r.accuracy_drop is not None else ""
            figure = f"{100 * r.score.value:.2f}%{drop}"
        speed = f", {r.speedup:.2f}× ({r.latency_kind})" if r.speedup else ""
        lat = r.latency
        if lat is not None and lat.ttft_speedup is not None and lat.tpot_speedup is not None:
            speed += f" [prefill {lat.ttft_speedup:.2f}×, decode {lat.tpot_speedup:.2f}×]"
        size = f", {r.size_mb:.1f} MB" if r.size_mb is not None else ""
        best = _best_text(study)
        return f"{head}: {r.plan_summary} → {figure}{speed}{size}" + (f"; {best}" if best else "")
    if trial.state.name == "PRUNED":
        return f"{head}: {r.plan_summary or 'no plan'} → {r.prune_reason or 'stopped'}"
    return f"{head}: {r.plan_summary or 'no plan'} → failed: {r.fail_reason or 'unknown'}"


def _print_front(study) -> None:
    from autocompress.report import collect
    from autocompress.study import metric_name

    info = collect(study)
    q = info.quality
    refined = len(info.refinements)
    table = Table(title=f"Pareto front of '{study.study_name}' ({len(info.front)} of {len(info.complete) - refined} trials"
                  + (f" and {refined} refinements)" if refined else ")"))
    kind = info.front[0].latency_kind if info.front else "measured"
    split = any(t.prefill_speedup is not None for t in info.front)
    baselines = any(t.baseline for t in info.front)
    # a generation front has two more figures: at under 120 columns its plans go below the table, so
    # that no figure is cut short
    plans_below = split and out.width < 120
    quality = (q.column, q.versus_column.replace(" the ", " the\n")) if q.own_unit else (
        f"{metric_name(study)}\n%", "drop\npt")
    columns = ("trial", *(("baseline",) if baselines else ()), *quality, f"speedup\n({kind})",
               *(("prefill", "decode") if split else ()), "size\nMB", *(() if plans_below else ("plan",)))
    for col in columns:
        # figures whole at 80 columns (a log file); the plan text wraps, a long word folds
        table.add_column(col, justify="left" if col in ("plan", "baseline") else "right",
                         **({"overflow": "fold", "min_width": 12} if col == "plan" else {"no_wrap": True}))
    def times(v: float | None) -> str:
        return f"{v:.2f}×" if v else ""

    for t in info.front:
        if q.own_unit:
            figures = (q.number(q.natural(t.accuracy, t.natural)), q.versus(t.accuracy, t.accuracy_drop))
        else:
            figures = (f"{t.accuracy:.2f}", f"{t.accuracy_drop:+.2f}" if t.accuracy_drop is not None else "")
        plan = t.plan_summary + (" (simulated bits)" if t.simulated else "")
        if t.refines is not None:
            plan += f" (refines trial {t.refines}: {t.recovery_scale or 1:g}× its recovery)"
        table.add_row(
            str(t.number),
            *((t.baseline or "",) if baselines else ()),
            *figures,
            times(t.speedup),
            *((times(t.prefill_speedup), times(t.decode_speedup)) if split else ()),
            f"{t.size_mb:.1f}" if t.size_mb is not None else "",
            *(() if plans_below else (plan,)),
        )
    out.print(table)
    if plans_below:
        for t in info.front:
            out.print(f"  trial {t.number}{f' ({t.baseline})' if t.baseline else ''}: {t.plan_summary}"
                      + (" (simulated bits)" if t.simulated else ""), highlight=False, soft_wrap=True)


def _run_study(request) -> None:
    """Run ``request`` (a :class:`~autocompress.study.StudyRequest`) with a progress bar, then show
    the front and write the report."""
    from autocompress import study as st
    from autocompress.report import collect, write_report

    progress = _bar_progress()
    try:
        ran = st.run_study(request, progress)
    except st.StudyInterrupted as stop:
        progress.close()
        resume = f"autocompress resume {request.name}"
        if request.url != st.default_storage(request.name):
            resume += f" --storage '{st.mask_url(request.url)}'"
        err.print(f"[yellow]interrupted[/]: {stop.completed}/{stop.target} trials complete; the running trial was "
                  f"recorded as failed. Resume with: {resume}")
        raise typer.Exit(130) from None
    finally:
        progress.close()
    if ran.result.gave_up:
        err.print(
            f"[yellow]stopped after 10 failed trials in a row[/]; last reason: {ran.result.last_failure}", highlight=False
        )
    _print_front(ran.study)
    report_path = st.default_output(request.name, "html")
    write_report(collect(ran.study, request.url), report_path)
    out.print(f"report: {report_path.resolve()}")


def _bar_progress():
    """A :class:`~autocompress.study.StudyProgress` that shows a running study on a rich progress bar
    (the library tells, the CLI draws); the bar appears once the study's checks have passed."""
    from autocompress.study import StudyProgress, completed
    from autocompress.store.urls import mask_url

    class _BarProgress(StudyProgress):

        def __init__(self) -> None:
            self.bar = _progress_bar()
            self.shown = False
            self.prep = None
            self.task = None
            self.target = 0
            self.started_at = 0.0

        def started(self, request) -> None:
            err.print(f"study [bold]{request.name}[/] in {mask_url(request.url)} (sampler {request.config.search.sampler})")
            self.bar.start()
            self.shown = True
            self.prep = self.bar.add_task("preparing teacher", total=None, best="")

        def close(self) -> None:
            if self.shown:
                self.bar.stop()
                self.shown = False

        def teacher_step(self, step: int, total: int, loss: float) -> None:
            self.bar.update(self.prep, completed=step, total=total, best=f"loss {loss:.3f}", description="fine-tuning teacher")

        def teacher_ready(self, metric, from_cache: bool, fine_tune_seconds: float) -> None:
            note = "from cache" if from_cache else f"fine-tuned in {fine_tune_seconds:.0f} s"
            self.bar.update(self.prep, total=1, completed=1, description="teacher ready",
                            best=f"{metric.name} {100 * metric.value:.2f}% ({note})")

        def warm_started(self, ws) -> None:
            err.print(
                f"warm start from '{ws.source}': {len(ws.enqueued)} front plans queued, {len(ws.present)} already here, "
                f"{len(ws.skipped)} skipped", highlight=False, markup=False, soft_wrap=True,
            )
            for number, reason in list(ws.skipped.items())[:5]:
                err.print(f"  skipped trial {number}: {reason}", highlight=False, markup=False, soft_wrap=True)
            if len(ws.skipped) > 5:
                err.print(f"  … and {len(ws.skipped) - 5} more (--verbose lists them)", highlight=False, markup=False)

        def trials_started(self, study, target: int) -> None:
            self.target = target
            self.started_at = time.monotonic()
            self.task = self.bar.add_task("trials", total=target, completed=min(completed(study), target),
                                          best=_best_text(study))

        def trial_done(self, study, trial) -> None:
            done = min(completed(study), self.target)
            self.bar.update(self.task, completed=done, best=_best_text(study))
            if not err.is_terminal:  # a log, not a screen: no bar is drawn, so one line per trial
                err.print(_trial_line(study, trial, done, self.target, time.monotonic() - self.started_at),
                          highlight=False, markup=False, soft_wrap=True)

        def refining(self, study, seconds: float) -> None:
            self.task = self.bar.add_task("refining the front", total=None, best=f"up to {seconds:.0f} s")

        def refined(self, study, trial) -> None:
            self.bar.update(self.task, best=_best_text(study))
            err.print(_refined_line(study, trial), highlight=False, markup=False, soft_wrap=True)

    return _BarProgress()


def _refined_line(study, trial) -> str:
    """One line for a refinement: the trial it rebuilt, its metric before and after, at what speed."""
    from autocompress.store import record

    r = record.read(trial)
    before = next((t for t in study.get_trials(deepcopy=False) if t.number == r.refines), None)
    was = f"{before.values[0]:.2f}" if before is not None and before.values else "?"
    drop = f" (drop {r.accuracy_drop:+.2f} pt)" if r.accuracy_drop is not None else ""
    return (f"trial {trial.number} refines trial {r.refines} ({r.plan_summary}) with {r.scale:g}× the recovery: "
            f"{was} → {trial.values[0]:.2f}{drop}, {r.speedup or 0:.2f}× faster")


@app.command()
def run(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file (see search_spaces/).")],
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default: the file's `name`).")] = None,
    storage: StorageOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Completed trials to reach (default: search.trials).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, help="Stop starting trials after this many seconds.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where fine-tuned teachers are cached (default: studies/cache).")] = None,
    sampler: SamplerOpt = None,
    warm_start: Annotated[Optional[str], typer.Option(
        "--warm-start", metavar="OTHER_STUDY",
        help="Queue the Pareto-front plans of an earlier study on the same base model first.")] = None,
    warm_start_storage: Annotated[Optional[str], typer.Option(
        "--warm-start-storage", metavar="URL",
        help="Where OTHER_STUDY lives (default: --storage if given, else sqlite:///studies/<OTHER_STUDY>.db).")] = None,
) -> None:
    """Create a study from SPACE, or continue the study of the same name."""
    from autocompress import study as st
    from autocompress.schema.config import load_config

    _run_study(st.run_request(
        load_config(space), name=study, storage=storage, trials=trials, timeout=timeout,
        cache_dir=cache_dir or st.DEFAULT_CACHE, config_file=str(space), sampler=sampler,
        warm_start=warm_start, warm_start_storage=warm_start_storage,
    ))


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="Name of an existing study.")],
    storage: StorageOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Completed trials to reach (default: the study's target).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where fine-tuned teachers are cached (default: studies/cache).")] = None,
    sampler: SamplerOpt = None,
) -> None:
    """Continue a study with the config stored in it (from any machine that reaches its storage)."""
    from autocompress import study as st

    _run_study(st.resume_request(name, _storage_for(name, storage), trials=trials, timeout=timeout,
                                 cache_dir=cache_dir or st.DEFAULT_CACHE, sampler=sampler))


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Name of the study.")],
    storage: StorageOpt = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="File to write (default: studies/<name>.<format>).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html (the report page), or csv / parquet (the trial table).")] = "html",
) -> None:
    """Write the study's offline HTML report (or its trial table) from the database alone."""
    from autocompress.api import write_report
    from autocompress.report.html import LARGE_REPORT_BYTES

    path = write_report(name, output, format=fmt, storage=storage)
    size = path.stat().st_size
    if fmt == "html" and size > LARGE_REPORT_BYTES:
        err.print(f"note: the report is {size / 2**20:.1f} MB (plotly's JavaScript is inlined so it opens offline)")
    out.print(f"report: {path.resolve()}")


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """List studies: trials complete/failed/running, front size, best accuracy and speedup."""
    from autocompress import study as st

    from autocompress.report.quality import Quality
    from autocompress.study.listing import study_lines

    urls = [storage] if storage else st.local_study_urls()
    lines = []
    for url in urls:
        lines += study_lines(st.open_storage(url, must_exist=True), url)
    if not lines:
        out.print("no studies found" + ("" if storage else f" in {st.DEFAULT_ROOT}/ (give --storage URL for another place)"))
        return
    own = any(Quality(line.scale).own_unit for line in lines)
    table = Table()
    for col in ("study", "complete", "failed", "running", "front", "best quality" if own else "best acc %",
                "best speedup in budget", "storage"):
        table.add_column(col, justify="left" if col in ("study", "storage") else "right", overflow="fold")
    for line in lines:
        r, q = line.summary, Quality(line.scale)
        if r.best_accuracy is None:
            best = "—"
        else:
            best = q.describe(r.best_accuracy, line.best_natural) if q.own_unit else f"{r.best_accuracy:.2f}"
        table.add_row(
            r.name, str(r.complete) + (f" (+{r.refined} refined)" if r.refined else ""), str(r.failed), str(r.running), str(r.front_size),
            best,
            f"{r.best_speedup:.2f}×" if r.best_speedup else "—",
            r.storage,
        )
    out.print(table)


@app.command()
def profiles(
    name: Annotated[Optional[str], typer.Argument(help="Show one profile in full (bundled name or YAML path).")] = None,
) -> None:
    """List the bundled device profiles (measured on this host, or predicted for absent devices)."""
    import yaml

    from autocompress.schema.profile import bundled_profiles, load_profile

    if name:
        prof = load_profile(name)
        text = yaml.safe_dump(prof.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True, width=200)
        out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
        return
    table = Table()
    for col in ("profile", "kind", "device", "runtime", "threads", "inputs (batch × seq)"):
        table.add_column(col, overflow="fold", no_wrap=col == "profile")
    for pname in bundled_profiles():
        p = load_profile(pname)
        where = p.spec.cpu.split(" (")[0] if p.spec else ("this host's GPU" if p.device == "cuda" else "this host's CPU")
        shapes = "the task's eval texts, batch 1" if p.task_inputs else ", ".join(f"{b}×{q}" for b, q in p.shapes)
        if p.generates:  # a chat workload: the prompt, then tokens generated one at a time
            shapes = f"{shapes} prompt, then {p.new_tokens} tokens generated"
        runtime = "—" if p.predicted else ("ONNX Runtime" if p.backend == "onnxruntime" else "PyTorch")
        table.add_row(pname, p.kind, where, runtime, str(p.threads), shapes)
    out.print(table)
    out.print("A search space names one as 'profile: NAME' (the latency objective) and may list others under "
              "'report_profiles'. Predicted figures come from a cost model calibrated on this host. "
              "'autocompress profiles NAME' shows one in full.", highlight=False)


@app.command()
def validate(space: Annotated[Path, typer.Argument(help="Search-space YAML file.")]) -> None:
    """Check a search space (config, model, profiles and data) without running anything costly."""
    from autocompress.schema.config import load_config
    from autocompress.search.workbench import check_inputs

    cfg = load_config(space)
    kind, _ = check_inputs(cfg, str(space))
    task = kind.load_data(cfg.task)
    if not kind.generates:
        out.print(
            f"{space}: ok — study '{cfg.name}', {len(task.train)} train / {len(task.eval)} eval"
            + (f" / {len(task.test)} test" if task.test is not None else "") + " examples, "
            f"{task.num_labels} classes ({', '.join(task.label_names)})"
        )
        return
    scored = [len(task.eval), len(task.test) if task.test is not None else 0]
    if cfg.task.choices is not None:  # one example per choice; its label is the question's number
        scored = [len(set(task.eval.labels)), len(set(task.test.labels)) if task.test is not None else 0]
    unit = "questions" if cfg.task.choices is not None else "documents"
    out.print(f"{space}: ok — study '{cfg.name}', {len(task.train)} train documents (up to {cfg.task.windows} "
              f"window{'s' if cfg.task.windows > 1 else ''} of {cfg.task.max_length} tokens each), {scored[0]} eval"
              + (f" / {scored[1]} test" if scored[1] else "") + f" {unit}, metric {cfg.task.metric}")


def export_table(result) -> Table:
    """An export's accuracies and latencies, one row per model. The figures never wrap or shrink to
    an ellipsis (a log file is 80 columns wide); a long model label folds instead."""
    table = Table(title=f"trial {result.trial} of '{result.study}': {result.plan_summary}")
    table.add_column("model", overflow="fold", min_width=16)
    natural = result.trial_metric is not None and result.trial_metric.natural is not None
    quality = f"{result.trial_metric.name}" if natural else "accuracy\n%"  # a perplexity in its own unit
    generates = any(row.ttft_ms is not None for row in result.latency)
    split = ("first token\nms", "per token\nms") if generates else ()
    for col in (quality, "latency\nms", *split, "teacher\nms", "speedup"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("measured\non", overflow="fold")
    if natural:
        figures = {"trial (stored)": result.trial_metric, "export (PyTorch)": result.rebuilt_metric}
        scores = {k: (m.natural if m is not None else None) for k, m in figures.items()}
    else:
        scores = {"trial (stored)": result.trial_accuracy, "export (PyTorch)": result.rebuilt_accuracy,
                  "export (ONNX Runtime)": result.onnx_accuracy}

    def ms(v: float | None) -> str:
        return f"{v:.2f}" if v else ""

    for row in result.latency:
        score = scores.get(row.what)
        timing = (ms(row.ttft_ms), ms(row.tpot_ms)) if generates else ()
        table.add_row(
            row.what, (f"{score:.4g}" if natural else f"{score:.2f}") if score is not None else "",
            ms(row.candidate_ms), *timing, ms(row.teacher_ms),
            f"{row.speedup:.2f}×" if row.speedup else "", f"{row.where} ({row.kind})",
        )
    return table


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Name of the study.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write (new or empty).")],
    trial: Annotated[Optional[int], typer.Option("--trial", help="Number of the trial to export.")] = None,
    pick: Annotated[Optional[str], typer.Option("--pick", help='A budget, e.g. "fastest with accuracy drop <= 1.0" or "smallest under 10 ms"; for a perplexity study "fastest with perplexity <= +10%".')] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx (encoders only; int8 layers quantised by ONNX Runtime; a plan with exits: one file per stage).")] = False,
    storage: StorageOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the study's fine-tuned teacher is cached (default: studies/cache).")] = None,
) -> None:
    """Write one trial's model (weights, plan, tokenizer, metrics; ONNX with --onnx), checked against the trial."""
    from autocompress import study as st
    from autocompress.errors import ExportError
    from autocompress.export import export_trial, pick_trial
    from autocompress.store.record import read

    if (trial is None) == (pick is None):
        raise ExportError("give exactly one of --trial N or --pick EXPR (e.g. --pick \"fastest with accuracy drop <= 1.0\")")
    url = _storage_for(name, storage)
    s = st.load(name, st.open_storage(url, must_exist=True))
    if pick is not None:
        chosen = pick_trial(s, pick)
        err.print(f"picked trial {chosen.number} ({read(chosen).plan_summary}) for \"{pick}\"", highlight=False)
        trial = chosen.number
    with err.status(f"exporting trial {trial} of '{name}': rebuilding and checking it"):
        result = export_trial(s, trial, output, cache_dir or st.DEFAULT_CACHE, onnx=onnx, storage_url=url)
    out.print(export_table(result))
    for row in result.latency:
        if row.note:
            out.print(f"{row.what}: {row.note}", highlight=False)
    loadable = "yes" if result.plain_hf else "no (use autocompress.load)"
    out.print(f"written: {result.directory.resolve()} — autocompress.load: yes; plain transformers: {loadable}"
              + (f"; {', '.join(result.onnx_files)} run{'s' if len(result.onnx_files) == 1 else ''} with onnxruntime alone"
                 if result.onnx_files else ""), highlight=False)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: library errors become one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)  # typer.Exit comes back as its code here
    except AutocompressError as exc:
        if _state["debug"]:
            raise
        from rich.markup import escape

        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, _click_errors("ClickException")):
            exc.show()
            sys.exit(2)
        if isinstance(exc, _click_errors("Abort")):
            sys.exit(130)
        raise
    if code:
        sys.exit(code)


def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name``, from click itself and from the copy newer typer releases
    carry (``typer._click``): an unknown command raises the latter's, which is not the former's."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


if __name__ == "__main__":
    main()
