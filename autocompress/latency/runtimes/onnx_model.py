"""The ONNX artefact: the float student exported by PyTorch, its int8 layers quantised by ONNX Runtime.

The result runs with ``onnxruntime`` alone. The layers the plan marks 8-bit get ONNX Runtime's
dynamic quantisation (int8 weights with per-channel scales, activations quantised at run time);
layers with simulated widths are exported with their fake-quantised float weights; the
classifier head stays float (ONNX Runtime's dynamic quantisation does not cover its Gemm nodes).

A model with early exits is written as one graph per stage between exits: the first takes the
tokenised inputs and gives the hidden state (``hidden_next``) and the first exit's logits, each
later one takes that state (``hidden``) and the attention mask and gives the next state and exit's logits, the last gives the
model's own logits. :class:`OnnxExitRunner` runs the next stage only for an input that did not
stop (at batch 1), so no graph holds control flow that ONNX Runtime's optimiser would have to keep
and each stage's int8 MatMuls are quantised as in the static model.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import logging
import tempfile
import warnings
from importlib import util as importlib_util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.tasks.batches import Encoded
from autocompress.tasks.evaluate import collect_logits
from autocompress.errors import AutocompressError, ExportError
from autocompress.ops.exits import EarlyExit, choose_exits, pool, static_part
from autocompress.models.adapters import adapter_for
from autocompress.schema.plan import CompressionPlan
from autocompress.ops import apply_bits_

__all__ = ["INSTALL", "OPSET", "OnnxExitRunner", "OnnxFacts", "OnnxRunner", "check_onnx_plan", "export_onnx", "float_part",
           "missing_onnx", "require_onnx", "stage_paths"]

OPSET = 18
INSTALL = "pip install 'autocompress[onnx]' (onnx, onnxruntime and onnxscript)"


def missing_onnx() -> str | None:
    """The first package the ONNX export and ONNX Runtime need that is not installed, or ``None``."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        if importlib_util.find_spec(name) is None:
            return name
    return None


def require_onnx() -> None:
    """Raise with an install hint unless the ONNX export's dependencies are importable."""
    name = missing_onnx()
    if name is not None:
        raise AutocompressError(f"--onnx needs the package '{name}': {INSTALL}")


@dataclass(frozen=True)
class OnnxFacts:
    path: Path
    opset: int
    inputs: tuple[str, ...]
    int8_matmuls: int  # MatMul nodes quantised by ONNX Runtime
    float_matmuls: int  # weight MatMul / Gemm nodes left in float
    simulated: bool  # some weights are fake-quantised floats (their width is not real here)
    exporter: str = "torch.onnx.export(dynamo=True)"
    stages: tuple[Path, ...] = ()  # a model with exits: its graphs, first to last (``path`` is the first)
    exit_threshold: float | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        return self.stages or (self.path,)

    @property
    def bytes(self) -> int:
        """Bytes on disk of what was written (every stage's file; weights are inside, never external data)."""
        return sum(f.stat().st_size for f in self.files)

    def runner(self, threads: int | None = None) -> "OnnxRunner":
        """An ONNX Runtime session (one per stage for a model with exits) on what was written."""
        if self.stages:
            return OnnxExitRunner(list(self.stages), float(self.exit_threshold or 1.0), threads=threads)
        return OnnxRunner(self.path, threads=threads)

    def to_dict(self) -> dict[str, Any]:
        exits = {} if not self.stages else {
            "stages": [p.name for p in self.stages], "exit_threshold": self.exit_threshold,
            "stage_io": "stage 0: the tokenised inputs -> hidden_next, exit_logits; each later stage: hidden (the "
                        "previous hidden_next), attention_mask -> hidden_next, exit_logits; the last stage -> logits; an input stops at the first "
                        "exit whose largest softmax probability reaches exit_threshold",
        }
        return {
            **exits,
            "file": self.path.name,
            "bytes": self.bytes,
            "opset": self.opset,
            "inputs": list(self.inputs),
            "int8_matmuls": self.int8_matmuls,
            "float_matmuls": self.float_matmuls,
            "simulated_weights": self.simulated,
            "exporter": self.exporter,
            "quantisation": "onnxruntime.quantization.quantize_dynamic: int8 weights per channel in 7 bits "
            "(reduce_range: no int16 saturation on x86 without VNNI), uint8 activations quantised at run time, "
            "MatMul nodes of the plan's 8-bit layers only",
        }


def check_onnx_plan(plan: CompressionPlan) -> None:
    """Raise :class:`ExportError` unless the ONNX model can compute what ``plan``'s model computes:
    weight-only int8/int4 Linears (bfloat16 activations, group-wise 4-bit codes) have no counterpart
    in ONNX Runtime's dynamic quantisation, which would quantise the activations too."""
    kept = [plan.layers[i].bits for i in plan.kept_layers]
    if plan.weight_scheme == "weight_only" and (any(b in (8, 4) for b in kept) or plan.head_bits < 32):
        raise ExportError("the plan's weight-only int8/int4 Linears have no ONNX Runtime counterpart (its int8 "
                          "quantises activations too): ship this trial for PyTorch, without --onnx")


def float_part(plan: CompressionPlan) -> CompressionPlan:
    """``plan`` with its real int8 widths turned back to float (ONNX Runtime quantises those instead)."""
    data = plan.to_dict()
    for layer in data["layers"]:
        if layer["bits"] == 8:
            layer["bits"] = 32
    data["head_bits"] = 32
    return CompressionPlan.from_dict(data)


def _int8_linears(model: nn.Module, layers: list[nn.Module], bits: list[int]) -> dict[str, int]:
    """The Linear modules of ``model``'s encoder ``layers`` whose width in ``bits`` (one per layer)
    is 8, those the ONNX model runs in int8: each name they have inside ``model`` (a layer that
    several positions share has one per position) to the module's identity."""
    names: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(n)
    out: dict[str, int] = {}
    for layer, width in zip(layers, bits, strict=True):
        if width == 8:
            for prefix in names[id(layer)]:
                out |= {f"{prefix}.{n}": id(m) for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and the quantiser's progress chatter (library code does not print)."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in noisy]
    root = logging.getLogger()

    class _DropQuantHints(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:  # the quantiser logs on the root logger
            return "pre-processing" not in record.getMessage()

    hint_filter = _DropQuantHints()
    root.addFilter(hint_filter)
    try:
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(hint_filter)
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _module_of(node: Any) -> list[str]:
    """Module names a node was traced from (innermost last), from the exporter's metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            with contextlib.suppress(ValueError, SyntaxError):
                return list(ast.literal_eval(prop.value))
    # older exporters name nodes after the module path: /bert/encoder/layer.0/attention/self/query/MatMul
    parts = node.name.strip("/").split("/")[:-1]
    return [".".join(parts)] if parts else []


def _token_example(input_names: list[str], vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        name: (torch.randint(min(100, vocab // 2), vocab, (2, 8), generator=g) if name == "input_ids" else
               torch.ones(2, 8, dtype=torch.long) if name == "attention_mask" else torch.zeros(2, 8, dtype=torch.long))
        for name in input_names
    }


def _write_graph(module: nn.Module, example: dict[str, torch.Tensor], output_names: list[str], wanted: dict[str, int],
                 path: Path) -> tuple[int, int]:
    """Export ``module`` called with ``example`` (keyword inputs, dynamic batch and sequence axes) to
    ``path``, its MatMuls of the Linear modules ``wanted`` quantised to int8 by ONNX Runtime;
    returns the counts of int8 MatMuls and of weight products left in float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from torch.export import Dim

    batch, seq = Dim("batch"), Dim("sequence")
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        float_path = Path(tmp) / "float.onnx"
        try:
            program = torch.onnx.export(
                module, (), kwargs=example, input_names=list(example), output_names=output_names,
                opset_version=OPSET, dynamic_shapes={k: {0: batch, 1: seq} for k in example},
                dynamo=True, external_data=False, verbose=False,
            )
        except Exception as exc:  # the exporter raises many kinds; say which model and why
            raise ExportError(f"PyTorch could not export the model to ONNX: {str(exc).splitlines()[0]}") from None
        program.save(str(float_path), external_data=False)
        graph = _fold_weight_transposes(float_path).graph
        initializers = {i.name for i in graph.initializer}
        chosen, seen, float_weights = [], set(), 0
        for node in graph.node:
            if node.op_type not in ("MatMul", "Gemm") or not any(i in initializers for i in node.input[1:2]):
                continue  # activation × activation products (attention scores) are not weights
            scopes = [s for s in _module_of(node) if s in wanted]
            if node.op_type == "MatMul" and scopes:
                chosen.append(node.name)
                seen.add(wanted[scopes[-1]])
            else:
                float_weights += 1
        if seen != set(wanted.values()):  # every int8 Linear found, under any of its names
            missing = ", ".join(sorted(n for n, m in wanted.items() if m not in seen)[:3])
            raise ExportError(f"could not find the ONNX MatMul nodes of {missing}; the int8 layers cannot be quantised")
        if chosen:
            # reduce_range: 7-bit weights. x86 CPUs without VNNI (AVX2-only) add pairs of uint8 × int8
            # products in int16 and saturate; 255·64·2 < 32767 cannot. The file is the same on every CPU.
            quantize_dynamic(
                float_path, path, op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen,
                per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
            )
        else:
            path.write_bytes(float_path.read_bytes())
    _merge_equal_initializers(path)
    return len(chosen), float_weights


def _fold_weight_transposes(path: Path) -> Any:
    """Replace each Transpose of a constant in the ONNX file at ``path`` by the transposed constant
    and return the file's model: the exporter's optimiser leaves the transpose of a weight that
    several positions share (a shared layer) unfolded, and ONNX Runtime quantises a MatMul only
    when its weight is a constant."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type == "Transpose" and node.input and node.input[0] in constants:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            value = numpy_helper.to_array(constants[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(value.transpose(perm), node.output[0]))
            folded.append(node)
    if folded:
        for node in folded:
            graph.node.remove(node)
        onnx.save(model, str(path))
    return model


def _merge_equal_initializers(path: Path) -> None:
    """Store each distinct constant of the ONNX file at ``path`` once: the exporter writes a shared
    layer's weights (or their transposes) once per position, and the file should not."""
    import hashlib

    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    first: dict[tuple[int, tuple[int, ...], str], str] = {}
    rename: dict[str, str] = {}
    keep = []
    for init in graph.initializer:
        data = init.raw_data or onnx.numpy_helper.to_array(init).tobytes()
        key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest())
        if key in first:
            rename[init.name] = first[key]
        else:
            first[key] = init.name
            keep.append(init)
    if not rename:
        return
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    onnx.save(model, str(path))


def export_onnx(student: nn.Module, plan: CompressionPlan, path: Path, input_names: list[str]) -> OnnxFacts:
    """Write ``student`` (a float student shaped by ``plan``) to ``path`` as ONNX with the plan's int8 layers.
    A plan with weight-only Linears is refused (:func:`check_onnx_plan`).

    Inputs are named as the tokenizer names them (``input_names``), with dynamic batch and
    sequence axes; the output is ``logits``. A student with early exits (an
    :class:`~autocompress.ops.exits.EarlyExit`) is written as its stages, ``stage_paths(path, n)``.
    """
    require_onnx()
    check_onnx_plan(plan)
    model = copy.deepcopy(student).eval()
    inner = static_part(model)
    apply_bits_(inner, float_part(plan))  # only simulated widths: fake-quantised float weights
    adapter = adapter_for(inner)
    bits = [plan.layers[i].bits for i in plan.kept_layers]
    example = _token_example(input_names, int(inner.config.vocab_size))
    if not isinstance(model, EarlyExit):
        wanted = _int8_linears(inner, list(adapter.layers(inner)), bits)
        int8, floats = _write_graph(inner, example, ["logits"], wanted, path)
        return OnnxFacts(path=path, opset=OPSET, inputs=tuple(input_names), int8_matmuls=int8, float_matmuls=floats,
                         simulated=plan.simulated)
    stages = _stages(model)
    paths = stage_paths(path, len(stages))
    int8 = floats = 0
    hidden_size = int(inner.config.hidden_size)
    for i, (stage, (lo, hi)) in enumerate(stages):
        if i == 0:
            feed = example
        else:
            g = torch.Generator().manual_seed(i)
            feed = {"hidden": torch.randn(2, 8, hidden_size, generator=g), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
        outputs = ["logits"] if i == len(stages) - 1 else ["hidden_next", "exit_logits"]
        wanted = _int8_linears(stage, stage.layers, bits[lo:hi])
        n8, nf = _write_graph(stage, feed, outputs, wanted, paths[i])
        int8, floats = int8 + n8, floats + nf
    return OnnxFacts(path=paths[0], opset=OPSET, inputs=tuple(input_names), int8_matmuls=int8, float_matmuls=floats,
                     simulated=plan.simulated, stages=tuple(paths), exit_threshold=model.threshold)


def stage_paths(path: Path, n: int) -> list[Path]:
    """Where the ``n`` stages of a model with exits go, for the file name ``path`` of its static form:
    ``model.onnx`` becomes ``model.stage0.onnx``, ``model.stage1.onnx``, ..."""
    return [path.with_name(f"{path.stem}.stage{i}{path.suffix}") for i in range(n)]


class _PassThrough(nn.Module):
    """A later stage's embeddings: the hidden state it is given goes on unchanged."""

    def forward(self, *args: Any, inputs_embeds: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if inputs_embeds is not None:
            return inputs_embeds
        return next(a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())


class _Stage(nn.Module):
    """Layers ``lo:hi`` of a student: from the tokenised inputs (the first stage) or from the hidden
    state before them, to the next hidden state and an exit's logits, or (the last) to the logits."""

    def __init__(self, student: nn.Module, lo: int, hi: int, head: nn.Module | None, pooling: str = "first") -> None:
        super().__init__()
        self.pooling = pooling
        model = copy.deepcopy(student)
        adapter = adapter_for(model)
        adapter.set_layers_(model, list(adapter.layers(model))[lo:hi])
        self.first, self.head = lo == 0, head
        if not self.first:
            embeddings = adapter.embeddings(model)
            owner_name, _, attr = next(n for n, m in model.named_modules() if m is embeddings).rpartition(".")
            setattr(model.get_submodule(owner_name) if owner_name else model, attr, _PassThrough())
        self.model = model if head is None else model.base_model
        self.layers = list(adapter.layers(model))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, hidden: torch.Tensor | None = None) -> Any:
        if self.first:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        else:
            inputs = {"inputs_embeds": hidden, "attention_mask": attention_mask}
        inputs = {k: v for k, v in inputs.items() if v is not None}
        if self.head is None:
            return self.model(**inputs).logits
        state = self.model(**inputs).last_hidden_state
        return state, self.head(pool(state, attention_mask, self.pooling))


def _stages(model: EarlyExit) -> list[tuple[_Stage, tuple[int, int]]]:
    """The stages of ``model`` between its exits, with the layer range (among the student's own) of each."""
    ends = [p + 1 for p in model.positions] + [model.num_layers]
    starts = [0, *ends[:-1]]
    heads = [*model.heads, None]
    return [(_Stage(model.model, lo, hi, head, model.pooling).eval(), (lo, hi))
            for lo, hi, head in zip(starts, ends, heads, strict=True)]


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # idle worker threads would otherwise spin after each run and slow whatever runs next,
    # which in an interleaved measurement is the model it is compared with
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """An ONNX Runtime session on the CPU (threads do not spin when idle): logits for tokenised
    examples, and a call for timing."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require_onnx()
        self.session = _session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feed(self, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The session's inputs from a batch of torch inputs (token types default to zeros)."""
        ids = inputs["input_ids"]
        return {n: (inputs[n] if n in inputs else torch.zeros_like(ids)).numpy().astype(np.int64) for n in self.inputs}

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], feed)[0]

    def logits(self, data: Encoded, batch_size: int = 64) -> torch.Tensor:
        """Logits on every example, in the examples' order (same batching as the torch evaluation)."""
        return collect_logits(data, lambda inputs: torch.from_numpy(self.run(self.feed(inputs))), batch_size)


def _confidence(logits: np.ndarray) -> np.ndarray:
    """The largest softmax probability of each row."""
    z = logits - logits.max(-1, keepdims=True)
    return 1.0 / np.exp(z).sum(-1)


class OnnxExitRunner(OnnxRunner):
    """A model with early exits in ONNX Runtime, one session per stage. A batch of one runs the
    next stage only while no exit was confident enough; a larger batch runs every stage and gives
    each input the logits of the exit it would take alone (as :class:`~autocompress.ops.exits.EarlyExit`)."""

    def __init__(self, stages: list[Path], threshold: float, threads: int | None = None) -> None:
        if len(stages) < 2:
            raise ValueError("a model with exits has at least two stages")
        super().__init__(stages[0], threads)
        self.later = [_session(p, threads) for p in stages[1:]]
        self.threshold = float(threshold)
        self.last_exit: int | None = None  # the exit the last batch of one took (len(later): none)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        hidden, logits = self.session.run(["hidden_next", "exit_logits"], feed)
        mask = feed.get("attention_mask")
        if mask is None:
            mask = np.ones(hidden.shape[:2], dtype=np.int64)
        if hidden.shape[0] == 1:
            for i, session in enumerate(self.later):
                if _confidence(logits)[0] >= self.threshold:
                    self.last_exit = i
                    return logits
                last = i == len(self.later) - 1
                outs = session.run(["logits"] if last else ["hidden_next", "exit_logits"], {"hidden": hidden, "attention_mask": mask})
                if last:
                    self.last_exit = len(self.later)
                    return outs[0]
                hidden, logits = outs
        exits = [logits]
        for i, session in enumerate(self.later):
            if i == len(self.later) - 1:
                final = session.run(["logits"], {"hidden": hidden, "attention_mask": mask})[0]
            else:
                hidden, logits = session.run(["hidden_next", "exit_logits"], {"hidden": hidden, "attention_mask": mask})
                exits.append(logits)
        chosen, _ = choose_exits([torch.from_numpy(e) for e in exits], torch.from_numpy(final), self.threshold)
        return chosen.numpy()
