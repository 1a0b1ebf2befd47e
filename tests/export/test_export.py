"""Shipping a trial: pick it, export it, load it into a pipeline, run it under ONNX Runtime alone."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import autocompress
from autocompress.errors import ExportError
from autocompress.export import export_trial, parse_pick, pick_trial
from autocompress.schema.plan import CompressionPlan
from conftest import file_digest, run_cli, tiny_config_dict


# ------------------------------------------------------------------------------------------ picking
def _fake_study() -> optuna.Study:
    """Five complete trials with known figures (and one infeasible, one cheap-pruned)."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], study_name="fake")
    rows = [  # number: (accuracy %, ratio, MB, drop, ms)
        (80.0, 1.00, 90.0, 0.0, 30.0),
        (79.5, 0.60, 60.0, 0.5, 18.0),
        (79.2, 0.50, 70.0, 0.8, 15.0),
        (78.5, 0.40, 55.0, 1.5, 12.0),
        (77.0, 0.30, 50.0, 3.0, 9.0),
    ]
    plan = CompressionPlan.uniform(2).to_dict()
    for acc, ratio, mb, drop, ms in rows:
        study.add_trial(optuna.trial.create_trial(
            values=[acc, ratio, mb], constraints={"accuracy_drop": drop - 5.0},
            user_attrs={"plan": plan, "fidelity": "full", "accuracy_drop": drop, "speedup": 1 / ratio,
                        "latency": {"candidate_ms": ms, "kind": "measured"}},
        ))
    study.add_trial(optuna.trial.create_trial(  # fastest of all, but over the study's own drop budget
        values=[60.0, 0.1, 10.0], constraints={"accuracy_drop": 15.0},
        user_attrs={"plan": plan, "fidelity": "full", "accuracy_drop": 20.0, "speedup": 10.0,
                    "latency": {"candidate_ms": 3.0}},
    ))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, user_attrs={"plan": plan, "fidelity": "cheap", "prune_reason": "not recovered"},
    ))
    return study


@pytest.mark.parametrize(
    ("expr", "number"),
    [
        ("fastest", 4),
        ("fastest with accuracy drop <= 1.0", 2),
        ("  Fastest   with accuracy drop <=1 pt ", 2),
        ("smallest", 4),
        ("smallest with accuracy drop <= 1", 1),
        ("most accurate", 0),
        ("most accurate under 16 ms", 2),
        ("smallest under 20 ms and at least 1.9× faster", 4),
        ("fastest under 65 MB and accuracy drop <= 0.5", 1),
        ("most accurate at least 2x faster", 2),
    ],
)
def test_pick_chooses_the_best_trial_within_the_budget(expr, number):
    assert pick_trial(_fake_study(), expr).number == number


@pytest.mark.parametrize(
    "expr",
    ["", "quickest", "fastest please", "fastest with accuracy drop < 1", "smallest under ten ms",
     "fastest under 10 s", "fastest and", "fastest with accuracy drop <= 1 or under 5 ms"],
)
def test_a_bad_pick_expression_shows_the_grammar(expr):
    with pytest.raises(ExportError, match="cannot read the pick expression.*'fastest' \\| 'smallest' \\| 'most accurate'"):
        parse_pick(expr)


def test_nothing_qualifies_names_the_three_nearest_candidates():
    with pytest.raises(ExportError) as info:
        pick_trial(_fake_study(), "fastest with accuracy drop <= 0.2 and under 10 ms")
    message = str(info.value)
    assert "no trial of 'fake' is 'fastest with accuracy drop <= 0.2 and under 10 ms'" in message
    assert message.count("trial ") >= 3 and "nearest: trial" in message
    assert "drop +0.50 pt" in message and "MB" in message and "ms" in message
    assert "trial 5" not in message  # infeasible trials are never candidates


# ------------------------------------------------------------------------------------------ a study
@pytest.fixture(scope="module")
def readable_model_dir(tmp_path_factory) -> Path:
    """A tiny BERT whose tokenizer knows the task's words, with weights large enough that its
    logits depend on the text: fine-tuned briefly it separates the classes with clear margins,
    so a wrong weight, shape or quantisation in the export shows in the predictions."""
    from transformers import BertTokenizerFast

    from conftest import VOCAB, tiny_bert

    d = tmp_path_factory.mktemp("readable-bert")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)
    assert "[UNK]" not in tokenizer.tokenize("good awful road")
    tokenizer.save_pretrained(d)
    model = tiny_bert(seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.1, generator=g)
                module.bias.normal_(0.0, 0.1, generator=g)
    model.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def kd(readable_model_dir, tiny_csv, tmp_path_factory):
    """A finished tiny study whose structural trials were distilled (recovery on).

    Trials: 0 teacher, 1 int8, 2 prune50 (heads + FFN 50 %, distilled), 3 half depth (distilled).
    """
    from autocompress import study as st
    from autocompress.schema.config import parse_config
    from autocompress.search.workbench import prepare

    root = tmp_path_factory.mktemp("kd")
    cfg = parse_config(tiny_config_dict(
        readable_model_dir, tiny_csv, name="kd", teacher={"epochs": 3.0, "learning_rate": 2e-3},
        recovery={"epochs": 1.0},
        fidelity={"enabled": False}, search={"trials": 4, "sampler": "random", "seed": 0},
    ))
    cache = root / "cache"
    bench = prepare(cfg, cache)
    url = f"sqlite:///{root / 'kd.db'}"
    study = st.create_or_load(cfg, st.open_storage(url), "kd", bench)
    st.run(study, bench, n_trials=4)
    assert bench.teacher.eval_accuracy.value >= 0.9  # a teacher that reads the text
    by_name = {t.user_attrs.get("baseline"): t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert {"teacher", "int8", "prune50", "half_depth"} <= set(by_name)
    return {"url": url, "db": root / "kd.db", "cache": cache, "study": study, "bench": bench, "trials": by_name, "root": root}


def _eval_texts(bench, n: int = 24) -> list[str]:
    return bench.task.eval.texts[:n]


def test_export_load_pipeline_gives_the_trial_models_predictions(kd, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from autocompress.search import build

    number = kd["trials"]["prune50"]
    trial = kd["study"].trials[number]
    assert trial.user_attrs["recovery"]["recovered"]  # distilled: the rebuild must redo it exactly
    out = tmp_path / "prune50"
    result = export_trial(kd["study"], number, out, kd["cache"])
    assert result.rebuilt_accuracy == result.trial_accuracy
    assert result.torch_max_logit_diff == 0.0
    assert not result.plain_hf and not (out / "config.json").exists()
    for name in ("model.safetensors", "plan.yaml", "autocompress.json", "metrics.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert CompressionPlan.from_yaml((out / "plan.yaml").read_text()).to_dict() == trial.user_attrs["plan"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == number and metrics["plain_hf_loadable"] is False
    assert metrics["trial_figures"]["accuracy"] == trial.user_attrs["accuracy"]
    assert metrics["trial_figures"]["latency"]["candidate_ms"] == trial.user_attrs["latency"]["candidate_ms"]
    assert metrics["trial_figures"]["size"] == trial.user_attrs["size"]
    assert {"accuracy", "latency", "size"} <= set(metrics["how_measured"])
    assert [r["what"] for r in metrics["latency_comparison"]] == ["trial (stored)", "export (PyTorch)"]

    # the trial's model, built again by the trial's builder
    reference = build.candidate(kd["bench"], CompressionPlan.from_dict(trial.user_attrs["plan"])).model
    model = autocompress.load(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer)
    texts = _eval_texts(kd["bench"])
    got = clf(texts)
    assert len({g["label"] for g in got}) == 3  # the model reads the text
    labels = kd["bench"].task.label_names
    with torch.inference_mode():
        for text, g in zip(texts, got):
            logits = reference(**tokenizer(text, return_tensors="pt")).logits[0]
            assert g["label"] == labels[int(logits.argmax())]  # real label names, not LABEL_0
            assert g["score"] == pytest.approx(torch.softmax(logits, -1).max().item(), rel=1e-5)
    with pytest.raises((OSError, ValueError)):
        AutoModelForSequenceClassification.from_pretrained(out)  # pruned heads: not a standard config


def test_uniform_shapes_also_load_with_plain_transformers(kd, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "half"
    result = export_trial(kd["study"], kd["trials"]["half_depth"], out, kd["cache"])
    assert result.plain_hf and (out / "config.json").is_file()
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert plain.config.num_hidden_layers == 2
    assert set(plain.config.id2label.values()) == set(kd["bench"].task.label_names)
    ours = autocompress.load(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(_eval_texts(kd["bench"]), padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(plain(**batch).logits, ours(**batch).logits)
    assert json.loads((out / "metrics.json").read_text())["plain_hf_loadable"] is True


def test_the_exported_file_is_the_trials_size_and_a_format_1_export_still_loads(kd, tmp_path):
    from safetensors.torch import save_model

    from autocompress.search import build
    from autocompress.errors import ModelError
    from autocompress.tasks.evaluate import predict_logits
    from autocompress.export.saved import META_FILE, PLAN_FILE, WEIGHTS_FILE

    number = kd["trials"]["int8"]
    trial = kd["study"].trials[number]
    out = tmp_path / "int8"
    export_trial(kd["study"], number, out, kd["cache"])
    assert (out / WEIGHTS_FILE).stat().st_size == trial.user_attrs["size"]["shipped_bytes"]
    teacher_bytes = kd["study"].user_attrs["teacher"]["size"]["shipped_bytes"]
    assert (out / WEIGHTS_FILE).stat().st_size < 0.6 * teacher_bytes  # int8 layers stored as int8 (the tiny table stays float)
    exported = autocompress.load(out)

    # what format 1 wrote: the float student, the bit-widths re-applied at load time
    old = tmp_path / "format1"
    old.mkdir()
    plan = CompressionPlan.from_dict(trial.user_attrs["plan"])
    float_model = build.candidate(kd["bench"], plan, keep_float=True).float_model
    save_model(float_model, str(old / WEIGHTS_FILE), metadata={"format": "pt"})
    (old / PLAN_FILE).write_text((out / PLAN_FILE).read_text())
    meta = json.loads((out / META_FILE).read_text())
    (old / META_FILE).write_text(json.dumps({**meta, "format_version": 1}))
    batch = kd["bench"].eval.head(16)
    assert torch.equal(predict_logits(autocompress.load(old), batch), predict_logits(exported, batch))
    (old / META_FILE).write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(ModelError, match="reads 1 and 2: export the trial again"):
        autocompress.load(old)


def test_cli_exports_onnx_that_runs_with_onnxruntime_alone(kd, tmp_path, capsys):
    from autocompress.latency.runtimes.onnx_model import OnnxRunner

    out = tmp_path / "int8"
    code, stdout, stderr = run_cli(capsys, "export", "kd", "--trial", str(kd["trials"]["int8"]), "-o", str(out),
                                "--onnx", "--storage", kd["url"], "--cache-dir", str(kd["cache"]))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    onnx = metrics["onnx"]
    assert abs(onnx["accuracy"] - onnx["torch_accuracy"]) <= 0.5
    assert onnx["int8_matmuls"] > 0
    for what in ("trial (stored)", "export (PyTorch)", "export (ONNX Runtime)"):
        assert what in stdout  # latencies printed side by side
    assert "plain transformers: no" in stdout

    texts = _eval_texts(kd["bench"], 8)
    runner = OnnxRunner(out / "model.onnx")
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    expected = runner.run(runner.feed(dict(enc)))
    script = textwrap.dedent(f"""
        import json, sys
        for banned in ("torch", "transformers", "autocompress"):
            sys.modules[banned] = None  # importing any of them now fails
        import numpy as np, onnxruntime as ort
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file({str(out / 'tokenizer.json')!r})
        tok.enable_padding(pad_id=0)
        enc = tok.encode_batch({texts!r})
        feed = {{"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}}
        session = ort.InferenceSession({str(out / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
        feed = {{i.name: feed[i.name] for i in session.get_inputs()}}
        print(json.dumps(session.run(["logits"], feed)[0].tolist()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert torch.allclose(torch.tensor(json.loads(proc.stdout)), torch.from_numpy(expected), atol=1e-5)


def _source_linear(weight, linears: dict, int8: bool):
    """The one Linear whose transposed weight ``weight`` holds, with the step of each output column
    for int8 levels (symmetric grid: a column's largest weight over its largest level; each level
    the nearest) or ``None`` for a float copy."""
    import numpy as np

    hits = []
    for name, w in linears.items():
        if w.shape != weight.shape:
            continue
        if int8:
            step = np.abs(w).max(0) / np.maximum(np.abs(weight).max(0), 1)
            if np.all(np.abs(weight * step - w) <= 0.5001 * step):
                hits.append((name, step))
        elif np.all(np.abs(weight - w) <= 1e-6 * np.abs(w).max()):
            hits.append((name, None))
    assert len(hits) == 1, f"a {weight.shape} {'int8' if int8 else 'float'} weight matches {[h[0] for h in hits] or 'no Linear'}"
    return hits[0]


def _onnx_int8_linear(x, levels, scale, bias, overflows: list[int]):
    """``x @ w + bias`` as the ONNX operators compute it: ``x`` quantised per tensor to uint8
    (DynamicQuantizeLinear), an exact integer product with the weight levels (MatMulInteger),
    rescaled. ``overflows`` counts the pairs of adjacent uint8 x int8 products whose sum leaves
    int16: x86 CPUs without VNNI add them in int16 (vpmaddubsw) and clip."""
    lo, hi = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    step = (hi - lo) / 255
    zero = torch.round(-lo / step).clamp(0, 255)
    xq = (torch.round(x / step) + zero).clamp(0, 255).double()
    padded = torch.nn.functional.pad(xq, (0, xq.shape[-1] % 2))
    w = torch.nn.functional.pad(levels, (0, 0, 0, levels.shape[0] % 2))
    pairs = padded[..., 0::2, None] * w[0::2] + padded[..., 1::2, None] * w[1::2]
    overflows[0] += int((pairs.abs() > 32767).sum())
    return ((xq - zero) @ levels * (step.double() * scale)).float() + bias


def test_onnx_quantises_exactly_the_plans_int8_layers(lively_bert, tmp_path):
    import re
    from collections import Counter

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from autocompress.latency.runtimes.onnx_model import OnnxRunner, export_onnx
    from autocompress.ops import apply_bits_, apply_structure_

    layers = [
        {"keep": True, "heads": 0.5, "ffn": 0.5, "bits": 8},
        {"keep": False},
        {"keep": True, "heads": 1.0, "ffn": 0.5, "bits": 32},
        {"keep": True, "heads": 0.75, "ffn": 1.0, "bits": 4},
    ]
    plan = CompressionPlan.from_dict({"layers": layers})
    student = lively_bert()
    apply_structure_(student, plan)
    facts = export_onnx(student, plan, tmp_path / "m.onnx", ["input_ids", "token_type_ids", "attention_mask"])
    assert facts.simulated
    # what the export hands to ONNX Runtime: the 8-bit layer still float, the 4-bit one fake-quantised
    float_model = copy.deepcopy(student)
    apply_bits_(float_model, CompressionPlan.from_dict({"layers": [{**layers[0], "bits": 32}, *layers[1:]]}))
    linears = {n: m.weight.detach().T.double().numpy() for n, m in float_model.named_modules()
               if isinstance(m, torch.nn.Linear)}

    # every weight product of the graph, traced back to its Linear by its values
    graph = onnx.load(str(facts.path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    int8, in_float = {}, []
    for node in graph.node:
        if node.op_type == "MatMulInteger":
            assert producer[node.input[0]].op_type == "DynamicQuantizeLinear"  # activations quantised at run time
            zero = init[node.input[3]].astype(np.int64) if len(node.input) > 3 and node.input[3] else 0
            levels = init[node.input[1]].astype(np.int64) - zero
            assert np.abs(levels).max() <= 127
            name, step = _source_linear(levels, linears, int8=True)
            assert name not in int8, f"{name} is quantised twice"
            int8[name] = (levels, step)
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in init:
            weight = init[node.input[1]].astype(np.float64)
            if any(a.name == "transB" and a.i for a in node.attribute):
                weight = weight.T
            in_float.append(_source_linear(weight, linears, int8=False)[0])

    def per_layer(names):
        return Counter(int(m.group(1)) if (m := re.search(r"encoder\.layer\.(\d+)\.", n)) else "head" for n in names)

    # Q, K, V, out, up, down of the one int8 layer (the student's first); the other two layers and the head in float
    assert per_layer(int8) == {0: 6}
    assert per_layer(in_float) == {1: 6, 2: 6, "head": 2}
    assert sorted([*int8, *in_float]) == sorted(linears)  # each Linear exactly once
    assert facts.int8_matmuls == len(int8)

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 20, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding, and a batch and length other than the export's example
    inputs = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    runner = OnnxRunner(facts.path)
    got = torch.from_numpy(runner.run(runner.feed(inputs)))

    # The reference: the float model with the int8 layers computed as the ONNX operators define
    # them, from the file's own int8 weights. ONNX Runtime may differ from it only by float32
    # rounding and ties of the uint8 rounding, whatever the CPU or release, so the bound is one
    # step of an 8-bit grid over the logits' range; a wrong weight, layer or mask, or a kernel
    # that clips, moves the logits by far more.
    emulated = copy.deepcopy(float_model)
    overflows = [0]
    for name, module in emulated.named_modules():
        if name in int8:
            levels, steps = (torch.from_numpy(a).double() for a in int8[name])
            module.forward = lambda x, lv=levels, st=steps, b=module.bias: _onnx_int8_linear(x, lv, st, b, overflows)
    reference = copy.deepcopy(student)
    apply_bits_(reference, plan)  # the trial's model: PyTorch's int8 kernels
    with torch.inference_mode():
        want = emulated.eval()(**inputs).logits
        trial = reference.eval()(**inputs).logits
        in_float_only = float_model.eval()(**inputs).logits
    bound = want.abs().max().item() / 255
    assert (want - in_float_only).abs().max() > 2 * bound  # the bound tells int8 layers from float ones
    diff = (got - want).abs().max().item()
    assert diff <= bound, (
        f"ONNX Runtime's logits differ from the int8 operators' definition by {diff:.3g} (bound {bound:.3g}); "
        f"{overflows[0]} pairs of uint8 x int8 products in these inputs exceed int16, which x86 kernels without "
        f"VNNI clip: weights quantised with reduce_range=True (7 bits) cannot overflow"
    )
    assert torch.equal(got.argmax(-1), trial.argmax(-1))  # the same predictions as the trial's model
    # and on every x86 CPU: no pair of products leaves int16, so kernels without VNNI compute the same
    assert overflows[0] == 0, f"{overflows[0]} pairs of uint8 x int8 products exceed int16 on x86 without VNNI"


def test_onnx_parity_allows_what_the_eval_split_cannot_resolve_and_no_more():
    from autocompress.export.ship import onnx_tolerance

    assert onnx_tolerance(0, 0, 80) == (0.5, 0.0)  # identical predictions: 0.5 pt
    allowed, noise = onnx_tolerance(40, 38, 2000)  # 78 flips between two int8 models on 2,000 examples
    assert noise == pytest.approx(100 * 1.96 * 78 ** 0.5 / 2000)  # about 0.87 pt at 95 %
    assert allowed == pytest.approx(100 * 3.29 * 78 ** 0.5 / 2000)  # refused beyond 99.9 %: about 1.45 pt
    # measured on the default study: -0.75 pt with 47 flips is past the 95 % noise but no broken export
    assert 0.67 < onnx_tolerance(16, 31, 2000)[1] + 0.01 and 0.75 < onnx_tolerance(16, 31, 2000)[0]
    assert 100 * (59 - 19) / 2000 > onnx_tolerance(19, 59, 2000)[0]  # a 2-point loss is refused


def test_load_refuses_what_export_did_not_write(tmp_path):
    from autocompress.errors import ModelError

    with pytest.raises(ModelError, match="not a directory"):
        autocompress.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="not written by `autocompress export`"):
        autocompress.load(tmp_path)


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def messy(kd, tmp_path_factory):
    """A copy of the kd study with a failed and a cheap-pruned trial added."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copy(kd["db"], root / "kd.db")
    url = f"sqlite:///{root / 'kd.db'}"
    study = optuna.load_study(study_name="kd", storage=url)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "out of memory"}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, user_attrs={"fidelity": "cheap", "prune_reason": "not recovered: trial 1 is as fast"},
    ))
    return {"url": url, "db": root / "kd.db", "failed": 4, "cheap": 5}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope", "--trial", "0"], "no study named 'nope'"),
        (["kd", "--trial", "99"], "has no trial 99; its trials are numbered 0–5"),
        (["kd", "--trial", "4"], "trial 4 failed (out of memory)"),
        (["kd", "--trial", "5"], "stopped at the cheap fidelity"),
        (["kd"], "give exactly one of --trial N or --pick EXPR"),
        (["kd", "--trial", "0", "--pick", "fastest"], "give exactly one of --trial N or --pick EXPR"),
        (["kd", "--pick", "quickest"], "cannot read the pick expression"),
        (["kd", "--pick", "fastest under 0.001 ms"], "nearest: trial"),
        (["kd", "--trial", "0", "--cache-dir", "EMPTY"], "is not in"),
        (["kd", "--trial", "0", "-o", "FULL"], "exists and is not empty"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(args, expected, messy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FULL").mkdir()
    (tmp_path / "FULL" / "keep.txt").write_text("mine")
    (tmp_path / "EMPTY").mkdir()
    before = file_digest(messy["db"])
    if "-o" not in args:
        args = [*args, "-o", "out"]
    code, stdout, stderr = run_cli(capsys, "export", *args, "--storage", messy["url"])
    assert code == 2, (stdout, stderr)
    assert expected in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert file_digest(messy["db"]) == before
    assert not (tmp_path / "out").exists() and (tmp_path / "FULL" / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial directory left
