"""The ONNX artefact: the float student exported by PyTorch, its int8 layers quantised by ONNX Runtime.

The result runs with ``onnxruntime`` alone. The layers the plan marks 8-bit get ONNX Runtime's
dynamic quantisation (int8 weights with per-channel scales, activations quantised at run time);
layers with simulated widths are exported with their fake-quantised float weights; the
classifier head stays float (ONNX Runtime's dynamic quantisation does not cover its Gemm nodes).
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

from autocompress.batches import Encoded
from autocompress.evaluate import collect_logits
from autocompress.errors import AutocompressError, ExportError
from autocompress.models import adapter_for
from autocompress.plan import CompressionPlan
from autocompress.transforms import apply_bits_

__all__ = ["INSTALL", "OPSET", "OnnxFacts", "OnnxRunner", "export_onnx", "float_part", "missing_onnx", "require_onnx"]

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
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


def float_part(plan: CompressionPlan) -> CompressionPlan:
    """``plan`` with its real int8 widths turned back to float (ONNX Runtime quantises those instead)."""
    data = plan.to_dict()
    for layer in data["layers"]:
        if layer["bits"] == 8:
            layer["bits"] = 32
    data["head_bits"] = 32
    return CompressionPlan.from_dict(data)


def _int8_linears(model: nn.Module, plan: CompressionPlan) -> set[str]:
    """Names of the Linear modules the plan runs in int8 (those of its 8-bit encoder layers)."""
    names = {id(m): n for n, m in model.named_modules()}
    out = set()
    for layer, base_i in zip(adapter_for(model).layers(model), plan.kept_layers, strict=True):
        if plan.layers[base_i].bits == 8:
            prefix = names[id(layer)]
            out |= {f"{prefix}.{n}" for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
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


def export_onnx(student: nn.Module, plan: CompressionPlan, path: Path, input_names: list[str]) -> OnnxFacts:
    """Write ``student`` (a float student shaped by ``plan``) to ``path`` as ONNX with the plan's int8 layers.

    Inputs are named as the tokenizer names them (``input_names``), with dynamic batch and
    sequence axes; the output is ``logits``.
    """
    require_onnx()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from torch.export import Dim

    model = copy.deepcopy(student).eval()
    apply_bits_(model, float_part(plan))  # only simulated widths: fake-quantised float weights
    wanted = _int8_linears(model, plan)
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    example = {
        name: (torch.randint(min(100, vocab // 2), vocab, (2, 8), generator=g) if name == "input_ids" else
               torch.ones(2, 8, dtype=torch.long) if name == "attention_mask" else torch.zeros(2, 8, dtype=torch.long))
        for name in input_names
    }
    batch, seq = Dim("batch"), Dim("sequence")
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        float_path = Path(tmp) / "float.onnx"
        try:
            program = torch.onnx.export(
                model, (), kwargs=example, input_names=list(input_names), output_names=["logits"],
                opset_version=OPSET, dynamic_shapes={k: {0: batch, 1: seq} for k in input_names},
                dynamo=True, external_data=False, verbose=False,
            )
        except Exception as exc:  # the exporter raises many kinds; say which model and why
            raise ExportError(f"PyTorch could not export the model to ONNX: {str(exc).splitlines()[0]}") from None
        program.save(str(float_path), external_data=False)
        graph = onnx.load(str(float_path)).graph
        initializers = {i.name for i in graph.initializer}
        chosen, seen, float_weights = [], set(), 0
        for node in graph.node:
            if node.op_type not in ("MatMul", "Gemm") or not any(i in initializers for i in node.input[1:2]):
                continue  # activation × activation products (attention scores) are not weights
            scopes = [s for s in _module_of(node) if s in wanted]
            if node.op_type == "MatMul" and scopes:
                chosen.append(node.name)
                seen.add(scopes[-1])
            else:
                float_weights += 1
        if seen != wanted:
            missing = ", ".join(sorted(wanted - seen)[:3])
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
    return OnnxFacts(
        path=path, opset=OPSET, inputs=tuple(input_names), int8_matmuls=len(chosen),
        float_matmuls=float_weights, simulated=plan.simulated,
    )


class OnnxRunner:
    """An ONNX Runtime session on the CPU (threads do not spin when idle): logits for tokenised
    examples, and a call for timing."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # idle worker threads would otherwise spin after each run and slow whatever runs next,
        # which in an interleaved measurement is the model it is compared with
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
