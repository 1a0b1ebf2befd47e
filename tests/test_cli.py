"""The command line: a tiny study end to end, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from plotly.offline import get_plotlyjs

from conftest import file_digest, run_cli, tiny_config_dict


def _table(out: str) -> list[dict[str, str]]:
    """The body rows of the rich table printed in ``out``, as {column header: cell text}.

    A cell too long for its column goes on over the next lines (whose first cell is empty in the
    body): its pieces are joined with a space, or without one where rich cut a word at the edge.
    """

    def join(pieces: list[str], width: int) -> str:
        text = pieces[0] if pieces else ""
        for before, piece in zip(pieces, pieces[1:]):
            text += ("" if len(before) == width else " ") + piece
        return text

    header: list[list[str]] = []
    rows: list[list[list[str]]] = []
    widths: list[int] = []
    for line in out.splitlines():
        bar = line[:1]
        if bar not in ("┃", "│"):
            continue
        raw = line.strip()[1:-1].split(bar)
        texts, widths = [c.strip() for c in raw], [len(c) - 2 for c in raw]  # one space of padding each side
        if bar == "┃":
            header.append(texts)
        elif rows and not texts[0]:
            for pieces, text in zip(rows[-1], texts, strict=True):
                pieces += [text] if text else []
        else:
            rows.append([[text] for text in texts])
    names = [" ".join(h[i] for h in header if h[i]) for i in range(len(widths))]  # headers wrap at spaces
    return [dict(zip(names, (join(p, w) for p, w in zip(row, widths)), strict=True)) for row in rows]


def _figure_data(html: str, div: str) -> list[dict]:
    """The traces plotly draws into the element ``div`` of a report page."""
    call = re.search(rf'Plotly\.newPlot\(\s*"{div}",\s*', html)
    assert call, f"the page draws {div}"
    return json.JSONDecoder().raw_decode(html, call.end())[0]


@pytest.fixture(scope="module")
def workdir(tiny_model_dir, tiny_csv, tmp_path_factory):
    """A directory holding a finished tiny study (studies/tiny.db) and its config."""
    d = tmp_path_factory.mktemp("cli")
    cfg = tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0}, search={"trials": 5, "sampler": "random"})
    (d / "space.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "run", "space.yaml"],
        cwd=d, capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and (d / "studies" / "tiny.html").is_file()
    assert "Pareto front" in proc.stdout
    (d / "run.stderr").write_text(proc.stderr)
    return d


def test_a_run_without_a_terminal_logs_one_line_per_trial(workdir):
    lines = [line for line in (workdir / "run.stderr").read_text().splitlines() if re.match(r"trial \d+ \[", line)]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'studies' / 'tiny.db'}")
    assert [int(line.split()[1]) for line in lines] == [t.number for t in study.trials]
    done = [line for line in lines if "→" in line and "%" in line and "full," in line]
    assert re.search(r"\[5/5 full, [\d.]+ min\]: .* → \d+\.\d\d% \(drop [+-]\d", done[-1]), done[-1]
    assert "Traceback" not in (workdir / "run.stderr").read_text()


def test_run_then_studies_report_and_resume(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    code, out, _ = run_cli(capsys, "studies")
    assert code == 0
    [row] = _table(out)
    assert row["study"] == "tiny" and row["storage"] == "sqlite:///studies/tiny.db"
    assert (row["complete"], row["failed"], row["running"]) == ("5", "0", "0")
    front = int(row["front"])
    assert 1 <= front <= 5

    code, out, _ = run_cli(capsys, "report", "tiny", "-o", "again.html")
    assert code == 0
    html = (workdir / "again.html").read_text(encoding="utf-8")
    assert "<title>autocompress report — tiny</title>" in html and "<h1>autocompress report — tiny</h1>" in html
    assert get_plotlyjs() in html  # plotly.js inlined: the page opens offline
    speed = {trace.get("name"): trace for trace in _figure_data(html, "plot-speed")}
    assert len(speed["Pareto front"]["x"]) == front  # the front the studies table counts
    points = [text for name in ("Pareto front", "dominated", "over the accuracy budget")
              for text in speed.get(name, {}).get("text", [])]
    assert sorted(int(re.match(r"<b>trial (\d+)</b>", text).group(1)) for text in points) == [0, 1, 2, 3, 4]

    code, out, err = run_cli(capsys, "resume", "tiny", "--trials", "6")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "studies")
    [row] = _table(out)
    assert (row["study"], row["complete"], row["failed"], row["running"]) == ("tiny", "6", "0", "0")


def _bad(workdir: Path, **overrides) -> Path:
    cfg = yaml.safe_load((workdir / "space.yaml").read_text())
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"search__sampler": "annealing"}, "search.sampler"),
        ({"space__bogus": 1}, "unknown key"),
        ({"task__train_size": -5}, "task.train_size"),
        ({"model__source": "/no/such/model"}, "does not exist"),
        ({"task__text_column": "tweet"}, "no column 'tweet'"),
    ],
)
def test_bad_inputs_give_one_line_exit_2_and_keep_the_study(workdir, capsys, monkeypatch, overrides, expected):
    monkeypatch.chdir(workdir)
    db = workdir / "studies" / "tiny.db"
    before = file_digest(db)
    path = _bad(workdir, **overrides)
    code, out, err = run_cli(capsys, "run", str(path), "--study", "other")
    assert code == 2
    assert "Traceback" not in err
    assert not (workdir / "studies" / "other.db").exists(), "nothing is created for a bad input"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[0].startswith("error:"), err
    assert expected in " ".join(lines)
    assert file_digest(db) == before, "a bad input must leave the stored study untouched"


def test_single_class_dataset_is_refused(workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(workdir)
    one = tmp_path / "one.csv"
    one.write_text("sentence,sentiment\n" + "".join(f"good day {i},positive\n" for i in range(400)))
    code, _, err = run_cli(capsys, "run", str(_bad(workdir, task__source=str(one))), "--study", "other")
    assert code == 2 and "only one class" in err and "Traceback" not in err


def test_malformed_yaml_and_missing_file(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "broken.yaml").write_text("name: x\nspace: [1, 2\n")
    code, _, err = run_cli(capsys, "run", "broken.yaml")
    assert code == 2 and "broken.yaml" in err and "line" in err
    code, _, err = run_cli(capsys, "validate", "nope.yaml")
    assert code == 2 and "not found" in err


def test_unknown_command_or_option_is_a_usage_line_and_exit_2(capsys):
    code, _, err = run_cli(capsys, "status")
    assert code == 2 and "No such command 'status'" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "run", "--no-such-option", "x.yaml")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_missing_study_and_bad_storage(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    code, _, err = run_cli(capsys, "report", "ghost")
    assert code == 2 and "ghost" in err and "Traceback" not in err
    assert not (workdir / "studies" / "ghost.db").exists()
    code, _, err = run_cli(capsys, "resume", "ghost", "--storage", f"sqlite:///{workdir / 'studies' / 'tiny.db'}")
    assert code == 2 and "no study named 'ghost'" in err and "tiny" in err
    code, _, err = run_cli(capsys, "studies", "--storage", "postgresql://me:hunter2@127.0.0.1:1/x")
    assert code == 2 and "cannot open storage" in err and "hunter2" not in err
    code, _, err = run_cli(capsys, "run", "space.yaml", "--storage", "nosuchdb://x")
    assert code == 2 and "cannot open storage" in err


def test_changed_config_on_existing_study_is_refused(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    db = workdir / "studies" / "tiny.db"
    before = file_digest(db)
    code, _, err = run_cli(capsys, "run", str(_bad(workdir, space__bits=[32])), "--study", "tiny")
    assert code == 2 and "already exists with different space" in err
    assert file_digest(db) == before


def test_error_text_is_printed_verbatim_not_as_markup(capsys, monkeypatch):
    from autocompress.schema import config
    from autocompress.errors import ConfigError

    def boom(path):
        raise ConfigError("bad value", file=str(path), key="space.heads[0]")

    monkeypatch.setattr(config, "load_config", boom)
    code, _, err = run_cli(capsys, "validate", "x.yaml")
    assert code == 2 and "space.heads[0]" in err


def test_profiles_lists_the_bundled_ones_with_their_kind(capsys, monkeypatch):
    from autocompress import cli
    from autocompress.schema.profile import bundled_profiles

    monkeypatch.setattr(cli.out, "_width", 160)  # one line per row: the cells are read back exactly
    code, out, _ = run_cli(capsys, "profiles")
    assert code == 0
    rows = {row["profile"]: row for row in _table(out)}
    assert set(rows) == set(bundled_profiles())
    shown = {name: (row["kind"], row["device"], row["threads"]) for name, row in rows.items()}
    assert shown["rpi4"] == ("predicted", "Arm Cortex-A72", "4")
    assert shown["cpu-2t"] == ("measured", "this host's CPU", "2")
    col = "inputs (batch × seq)"
    assert rows["cpu-2t"][col] == "1×128" and rows["cpu-2t-batch"][col] == "8×64, 8×128"
    assert rows["cpu-2t-task"][col] == "the task's eval texts, batch 1" and rows["cpu-2t"]["runtime"] == "PyTorch"
    assert rows["rpi4"]["runtime"] == "—" and rows["ort-2t-task"]["runtime"].startswith("ONNX Runtime")
    assert "report_profiles" in out


def test_profiles_name_prints_a_profile_that_can_be_copied_into_a_file(capsys):
    from autocompress.schema.profile import DeviceProfile, load_profile

    code, out, _ = run_cli(capsys, "profiles", "rpi4")
    assert code == 0
    assert "kind: predicted" in out and "fp32_gflops_per_core: 12.0" in out and "sources:" in out
    assert DeviceProfile.model_validate(yaml.safe_load(out)) == load_profile("rpi4")


@pytest.mark.parametrize(("name", "expected"), [("nope", "Unknown profile 'nope'"), ("rpi", "Did you mean 'rpi4'?")])
def test_unknown_profile_is_one_line_and_exit_2(capsys, name, expected):
    code, out, err = run_cli(capsys, "profiles", name)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert expected in lines[0] and "Available: cpu-1t" in lines[0] and "Traceback" not in err


def test_validate_checks_every_profile_against_the_model(tiny_model_dir, tiny_csv, tmp_path, capsys):
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv, report_profiles=["rpi4"])))
    code, out, err = run_cli(capsys, "validate", str(ok))
    assert code == 0 and ": ok — study 'tiny'" in " ".join(out.split()), err
    long = tmp_path / "long.yaml"
    too_long = {"name": "long", "kind": "measured", "threads": 1, "seq_len": 512}
    long.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv, report_profiles=[too_long])))
    code, _, err = run_cli(capsys, "validate", str(long))
    assert code == 2 and "profile 'long' has seq_len 512" in err and "at most 128 tokens" in err
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv, profile="cpu-2tt")))
    code, _, err = run_cli(capsys, "validate", str(typo))
    assert code == 2 and "key 'profile'" in err and "Did you mean 'cpu-2t'" in err


def test_ctrl_c_during_the_trials_says_how_to_resume_and_exits_130(workdir, capsys, monkeypatch):
    """A cut-off run is not a finished one to a script: exit 130, and the command that continues it."""
    from autocompress import study as st

    def interrupted(request, progress=None):
        raise st.StudyInterrupted(completed=3, target=request.trials)

    monkeypatch.chdir(workdir)
    monkeypatch.setattr(st, "run_study", interrupted)
    code, _, err = run_cli(capsys, "run", "space.yaml", "--study", "cut", "--trials", "9")
    assert code == 130
    assert "3/9 trials complete" in err and "Resume with: autocompress resume cut" in err
    assert "Traceback" not in err


def test_export_table_keeps_every_figure_readable_at_80_columns():
    """A log or CI console is 80 columns: the long ONNX Runtime label once squeezed every number
    to an ellipsis. The figures stay whole; the label folds."""
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from autocompress.cli import export_table
    from autocompress.export.ship import ORT_ROW, LatencyRow

    rows = (LatencyRow("trial (stored)", 4.46, 7.27, 1.63, "measured", "vm"),
            LatencyRow("export (PyTorch)", 11.32, 17.93, 1.58, "measured", "vm"),
            LatencyRow("export (ONNX Runtime)", 7.15, None, 2.51, "measured", "vm"),
            LatencyRow(ORT_ROW, 4.41, 7.08, 1.61, "measured", "vm"))
    result = SimpleNamespace(trial=2, study="latency-onnxruntime-seed1", plan_summary="6/6 layers · heads 50% · ffn 50%",
                             trial_accuracy=72.2, rebuilt_accuracy=72.2, onnx_accuracy=72.05, latency=rows,
                             trial_metric=None, rebuilt_metric=None)
    buf = StringIO()
    Console(file=buf, width=80, force_terminal=False).print(export_table(result))
    text = buf.getvalue()
    assert "…" not in text and all(line.rstrip().endswith(("┓", "┃", "┩", "│", "┘")) for line in text.splitlines()[1:])  # nothing cut off
    for figure in ("72.20", "72.05", "4.46", "7.27", "1.63×", "11.32", "17.93", "1.58×", "7.15", "2.51×", "4.41", "7.08", "1.61×"):
        assert figure in text, figure


def test_a_decoders_export_table_shows_perplexity_and_the_generation_split():
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from autocompress.cli import export_table
    from autocompress.export.ship import LatencyRow
    from autocompress.tasks.evaluate import Metric

    def ppl(value: float) -> Metric:
        return Metric(name="perplexity", value=0.9, ci_low=0.85, ci_high=0.95, n=200, natural=value)

    rows = (LatencyRow("trial (stored)", 812.0, 1890.0, 2.33, "measured", "vm", ttft_ms=40.1, tpot_ms=12.25),
            LatencyRow("export (PyTorch)", 820.5, 1901.0, 2.32, "measured", "vm", ttft_ms=41.0, tpot_ms=12.39))
    result = SimpleNamespace(trial=9, study="llama-bbc", plan_summary="2/6 layers · int8", trial_accuracy=21.0,
                             rebuilt_accuracy=21.0, onnx_accuracy=None, latency=rows, trial_metric=ppl(187.3),
                             rebuilt_metric=ppl(187.4))
    buf = StringIO()
    Console(file=buf, width=100, force_terminal=False).print(export_table(result))
    text = buf.getvalue()
    assert "perplexity" in text and "first token" in text and "per token" in text and "accuracy" not in text
    for figure in ("187.3", "187.4", "812.00", "40.10", "12.25", "1890.00", "2.33×", "41.00", "12.39"):
        assert figure in text, figure


def test_the_front_table_keeps_its_figures_whole_at_80_columns(workdir, monkeypatch, capsys):
    from autocompress import cli
    from autocompress.report import collect

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'studies' / 'tiny.db'}")
    monkeypatch.setattr(cli.out, "_width", 80)
    cli._print_front(study)
    text = capsys.readouterr().out
    assert "…" not in text
    for t in collect(study).front:
        cells = [str(t.number), f"{t.accuracy:.2f}", f"{t.accuracy_drop:+.2f}", f"{t.speedup:.2f}×"]
        assert re.search(r"│\s+" + r" │.*?".join(map(re.escape, cells)) + " │", text), (cells, text)


def test_a_refinement_budget_not_below_the_studys_time_budget_is_refused_in_one_line(tiny_model_dir, tiny_csv,
                                                                                     tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config_dict(tiny_model_dir, tiny_csv,
                                                   search={"time_budget": 600, "refine": {"seconds": 900}})))
    code, _, err = run_cli(capsys, "validate", str(bad))
    assert code == 2 and "Traceback" not in err
    assert "key 'search.refine'" in err and "below the time budget" in err and len(err.strip().splitlines()) == 1
    db = tmp_path / "kept.db"
    code, _, err = run_cli(capsys, "run", str(bad), "--storage", f"sqlite:///{db}")
    assert code == 2 and not db.exists()  # refused before a study is stored
