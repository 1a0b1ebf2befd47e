"""The exported directory, and loading it back into a working model.

::

    DIR/
      model.safetensors   the compressed student as it ships (ops.pack): int8 layers as int8
                          weights with per-channel scales, weight-only int4 layers as codes two to a
                          byte with a scale and zero per group, simulated 4/2-bit layers as codes
                          packed two/four to a byte, 8-bit tables as codes per row, the rest float;
                          a tensor shared by several layers stored once. Its bytes are the trial's size.
      plan.yaml           the trial's CompressionPlan: rebuilds the shapes
      autocompress.json   format version, the task kind, the base model's Hugging Face config, the label names
      config.json         only when plain transformers can rebuild the shapes ("plain_hf")
      generation_config.json  a model that generates: the base model's generation settings
      tokenizer files     tokenizer.save_pretrained
      metrics.json        the trial's figures and the export's own checks (written by ship.py)
      model.onnx          with --onnx (a plan with exits: model.stage0.onnx, model.stage1.onnx, ...)

:func:`load` builds the base architecture from the stored config (nothing is downloaded and no
remote code runs), gives it the plan's shapes and unpacks the weights into it, every tensor
accounted for (dynamic int8 and weight-only Linears are rebuilt from their codes), so its logits
are the trial model's. Its ``transformers`` class is the task kind's (``task_kind`` in
``autocompress.json``): a causal language model loads as ``AutoModelForCausalLM`` builds it, and
``generate()`` with its default (dynamic) key/value cache gives the trial model's tokens, whatever
the key/value heads each pruned layer kept. A format-1 directory (float weights, the bit-widths
re-applied at load time) still loads.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import ModelError
from autocompress.models.adapters import adapter_for
from autocompress.ops import Selection, apply_bits_, apply_plan_
from autocompress.ops.exits import exits_summary, static_part
from autocompress.ops.pack import packed_tensors, unpack_
from autocompress.ops.quantize import bits_summary
from autocompress.ops.vocab import KeptShape, KeptVocabulary, padding_from_lookup_, word_embeddings
from autocompress.schema import legacy
from autocompress.schema.plan import CompressionPlan
from autocompress.tasks.kind import TaskKind, task_kind

__all__ = ["FORMAT_VERSION", "GENERATION_FILE", "META_FILE", "PLAN_FILE", "WEIGHTS_FILE", "load", "plain_config",
           "save_student"]

FORMAT_VERSION = 2
READS = legacy.EXPORT_FORMATS  # format 1: float weights, bit-widths re-applied from plan.yaml at load time
META_FILE = "autocompress.json"
PLAN_FILE = "plan.yaml"
WEIGHTS_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"


def _with_labels(config: Any, label_names: list[str]) -> Any:
    """A copy of ``config`` naming the task's classes (a language model has none: unchanged)."""
    config = copy.deepcopy(config)
    if not label_names:
        return config
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    return config


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def auto_class(kind: TaskKind) -> Any:
    """The ``transformers`` auto class that builds ``kind``'s models (``AutoModelForSequenceClassification``, ...)."""
    import transformers

    return getattr(transformers, kind.auto_class)


def plain_config(student: nn.Module, plan: CompressionPlan, kind: TaskKind) -> Any | None:
    """The standard config of ``student`` (a float student shaped by ``plan``) when the plain
    ``transformers`` auto class of ``kind`` can rebuild its shapes from it, else ``None``.

    That holds when nothing is below 32 bits (nothing to re-apply), no layer runs another's weights,
    and every kept layer has the same attention heads, key/value heads and FFN neurons: the config
    then says the kept depth and those widths (the family's own field names, the head size kept
    where the family stores it, as grouped-query decoders do). It is checked by building the
    architecture from the config and comparing every weight's shape, so a width a family derives
    instead of reading (an encoder's or GPT-2's head size: hidden size / heads) refuses pruned heads.
    """
    if plan.simulated or plan.quantises or plan.exits is not None or plan.vocab_min_count is not None \
            or plan.share is not None:
        return None  # exits: plain transformers would run every layer; a kept vocabulary or sharing: no such config
    adapter = adapter_for(student)
    layers = adapter.layers(student)
    shapes = set()
    for layer in layers:
        attn = adapter.attention(layer)
        shapes.add((attn.num_heads, attn.num_kv_heads, attn.head_size, adapter.ffn(layer).width))
    if len(shapes) != 1:
        return None
    ((heads, kv_heads, head_size, width),) = shapes
    fields = adapter.fields
    config = copy.deepcopy(student.config)
    setattr(config, fields.layers, len(layers))
    setattr(config, fields.heads, heads)
    setattr(config, fields.ffn, width)
    if fields.kv_heads is not None:
        setattr(config, fields.kv_heads, kv_heads)
    elif kv_heads != heads:
        return None
    if fields.head_size is not None:
        setattr(config, fields.head_size, head_size)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = auto_class(kind).from_config(config)
    return config if _shapes(rebuilt) == _shapes(student) else None


def save_student(
    directory: Path, model: nn.Module, plan: CompressionPlan, base_config: Any, label_names: list[str], kind: TaskKind,
) -> bool:
    """Write the weights, plan and metadata of ``model`` (the trial's compressed model) into ``directory``.

    ``base_config`` is the Hugging Face config of the uncompressed model the plan was made for.
    Returns whether plain transformers can load the directory (a ``config.json`` was written).
    """
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / PLAN_FILE).write_text(plan.to_yaml())
    tensors, metadata = packed_tensors(model)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata=metadata)
    shutil.copymode(directory / PLAN_FILE, directory / WEIGHTS_FILE)  # safetensors writes it owner-only
    plain = plain_config(model, plan, kind)
    if plain is not None:
        _with_labels(plain, label_names).save_pretrained(directory)
    generation = getattr(model, "generation_config", None)
    if generation is not None and getattr(model, "can_generate", lambda: False)():
        generation.save_pretrained(directory)  # what generate() does by default: the base model's settings
    meta = {
        "format_version": FORMAT_VERSION,
        "task_kind": kind.name,
        "architecture": type(model).__name__,
        "base_config": _with_labels(base_config, label_names).to_dict(),
        "labels": list(label_names),
        "plain_hf": plain is not None,
        "bits": bits_summary(plan),
    }
    exits = exits_summary(plan)
    if exits is not None:
        meta["exits"] = exits
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return plain is not None


def _read_meta(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ModelError(f"'{directory}' is not a directory; give the directory `autocompress export` wrote")
    path = directory / META_FILE
    if not path.is_file():
        hint = (
            "; it has a config.json: load it with AutoModelForSequenceClassification.from_pretrained"
            if (directory / "config.json").is_file()
            else ""
        )
        raise ModelError(f"'{directory}' has no {META_FILE}: it was not written by `autocompress export`{hint}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version not in READS:
        raise ModelError(f"{path} has format_version {version!r}; this version of autocompress reads "
                         f"{' and '.join(map(str, READS))}: export the trial again with this version")
    return meta


def _base_config(data: dict[str, Any]) -> Any:
    from transformers import CONFIG_MAPPING

    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"the exported model's type {model_type!r} is not built into this transformers version")
    return CONFIG_MAPPING[model_type].from_dict(data)


def _kept_shape(model: nn.Module, weights: Path, prefix: str = "") -> KeptShape:
    """The shape of the kept-vocabulary table saved in ``weights`` for ``model`` (its rows and lookup come with the weights)."""
    from safetensors import safe_open

    table = word_embeddings(model)
    name = prefix + next(n for n, m in model.named_modules() if m is table)
    try:
        with safe_open(str(weights), framework="pt") as f:
            rows_key = f"{name}.weight" if f"{name}.weight" in f.keys() else f"{name}.codes"  # an 8-bit table: codes
            rows = f.get_slice(rows_key).get_shape()[0]
            full = f.get_slice(f"{name}.lookup").get_shape()[0]
    except Exception as exc:  # a missing key or a damaged file: say which
        raise ModelError(f"{weights} holds no kept vocabulary at {name}: {str(exc).splitlines()[0]}") from None
    return KeptShape(rows=rows, full_rows=full)


def load(directory: str | Path) -> nn.Module:
    """The exported model in ``directory``, in eval mode, computing exactly what the trial's model computed.

    Its class is the one the task kind's ``transformers`` auto class builds: a classifier works with
    ``transformers.pipeline("text-classification", model=..., tokenizer=...)`` (the tokenizer is in
    the same directory) and shows the task's label names; a causal language model ``generate()``s
    with the base model's generation settings and works with ``pipeline("text-generation", ...)``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    d = Path(directory)
    meta = _read_meta(d)
    kind = task_kind(legacy.export_task_kind(meta))
    plan = CompressionPlan.from_yaml((d / PLAN_FILE).read_text())
    config = _base_config(meta["base_config"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = auto_class(kind).from_config(config)  # random weights, replaced below
    shape = None if plan.vocab_min_count is None else _kept_shape(
        model, d / WEIGHTS_FILE, "model." if plan.exits is not None else "")  # the exits' wrapper holds the student as model
    # shapes only: which units were kept, the vocabulary's rows and the exit heads come with the weights
    model = apply_plan_(model, plan, Selection(vocabulary=shape), bits=False)
    if legacy.export_weights_are_float(meta):
        try:
            load_model(model, str(d / WEIGHTS_FILE), strict=True)
        except (RuntimeError, OSError) as exc:
            raise ModelError(f"the weights in {d / WEIGHTS_FILE} do not fit the plan's shapes: {str(exc).splitlines()[0]}") from None
        _point_padding_(model, plan)
        apply_bits_(model, plan)
        return _with_generation(model, d).eval()
    try:
        with safe_open(str(d / WEIGHTS_FILE), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{d / WEIGHTS_FILE} cannot be read: {str(exc).splitlines()[0]}") from None
    try:
        unpack_(model, tensors, metadata)
    except ModelError as exc:
        raise ModelError(f"{d / WEIGHTS_FILE}: {exc}") from None
    _point_padding_(model, plan)
    return _with_generation(model, d).eval()


def _with_generation(model: nn.Module, directory: Path) -> nn.Module:
    """``model`` with the generation settings saved beside it (a model built from its config alone
    would take the defaults). A pruned decoder's layers may cache fewer key/value heads than the
    config's count: transformers' default cache (``DynamicCache``) and its static caches take each
    layer's width from the keys it is given, so the config's count is not read."""
    path = directory / GENERATION_FILE
    if path.is_file() and getattr(model, "can_generate", lambda: False)():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(directory)
    return model


def _point_padding_(model: nn.Module, plan: CompressionPlan) -> None:
    """Point a loaded kept-vocabulary table's padding row where its lookup maps the padding id (an
    8-bit table has no padding row to point)."""
    if plan.vocab_min_count is None:
        return
    table = word_embeddings(static_part(model))
    if isinstance(table, KeptVocabulary):
        padding_from_lookup_(table)
