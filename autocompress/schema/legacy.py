"""Every reader of a format that an earlier autocompress stored, in one place.

What a study, a trial or an export directory holds outlives the version that wrote it: a stored
study is reported, resumed and exported by later versions, an export directory is loaded by them.
Each function here reads one older stored form and says which; the modules that own the current
forms (``schema.config``, ``store.record``, ``store.facts``, ``store.study_record``,
``export.saved``) call these rather than reading older forms themselves. A function that fills in
a setting returns what the older version did without it, so old figures read and rebuild as
they were made. (A key that a schema simply defaults, such as a plan's ``exits.pooling``, is
part of the current form and stays with its schema.)

Only plain data goes in and out: this module sits in the lowest layer and imports nothing of the
package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "LEGACY_TRAINING",
    "LEGACY_RECOVERY",
    "with_legacy_training",
    "predated_training",
    "space_schedule",
    "config_metric",
    "STUDY_VERSION_BEFORE_VERSIONING",
    "study_version",
    "RECORD_VERSION_BEFORE_VERSIONING",
    "record_version",
    "estimate",
    "metric",
    "score",
    "size_bytes",
    "EXPORT_FORMATS",
    "EXPORT_KIND_BEFORE_KINDS",
    "export_task_kind",
    "export_weights_are_float",
]


# ------------------------------------------------------------------ a study's stored config
#: training settings added after the first stored studies, at the values that reproduce how those
#: studies trained (their stored configs lack the keys; see :func:`with_legacy_training`)
LEGACY_TRAINING: dict[str, Any] = {"freeze_word_embeddings": False, "group_by_length": False}
#: the same for recovery: one flat budget whatever the depth, logits only
LEGACY_RECOVERY: dict[str, Any] = {**LEGACY_TRAINING, "depth_scaled": False, "hidden_weight": 0.0,
                                   "quantization_aware": False, "quantize_only_fraction": 0.0,
                                   "augment": {"kind": "none"}}
_PREDATED = (("teacher", LEGACY_TRAINING), ("recovery", LEGACY_RECOVERY))


def with_legacy_training(stored: dict[str, Any]) -> dict[str, Any]:
    """A study's stored config (the study attribute ``config``) with the training settings it
    predates filled in as it ran them.

    Reads: configs stored before ``teacher``/``recovery`` had ``freeze_word_embeddings``,
    ``group_by_length`` (both) and ``depth_scaled``, ``hidden_weight``, ``quantization_aware``,
    ``quantize_only_fraction``, ``augment`` (recovery), e.g. the
    version-1 study of 0.1.0. A stored config holds every setting of the version that wrote it; a
    setting it lacks was added later and the study's trials were built without it. Filling in
    :data:`LEGACY_TRAINING` / :data:`LEGACY_RECOVERY` keeps the study's teacher (and its cache
    entry) and lets export rebuild its candidates exactly as they were scored. A current config
    comes back unchanged.
    """
    out = dict(stored)
    for section, legacy in _PREDATED:
        if isinstance(out.get(section), dict):
            out[section] = {**legacy, **out[section]}
        elif section not in out:
            out[section] = dict(legacy)
    return out


def predated_training(stored: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each training section (``teacher``, ``recovery``) of a stored config, the settings it
    predates, at the values it ran with (the same configs as :func:`with_legacy_training` reads);
    empty for a current config."""
    out: dict[str, dict[str, Any]] = {}
    for section, legacy in _PREDATED:
        held = stored.get(section)
        if isinstance(held, dict):
            missing = {k: v for k, v in legacy.items() if k not in held}
            if missing:
                out[section] = missing
    return out


def space_schedule(data: Any) -> Any:
    """A ``space`` section (a config file's or a stored study's) with ``schedule`` set from the
    older spelling ``per_layer`` when only that is given.

    Reads: files and stored studies written before ``space.schedule`` existed, which say only
    ``per_layer: true`` (every layer its own values) or ``false`` (one set for all: ``shared``).
    """
    if isinstance(data, dict) and "schedule" not in data and "per_layer" in data:
        return {**data, "schedule": "per_layer" if data["per_layer"] is True else "shared"}
    return data


def config_metric(stored: Mapping[str, Any]) -> str:
    """The task metric (``task.metric``) a study's stored config names, read without parsing it.

    Reads: configs stored before ``task.metric`` existed name none; their first objective was
    top-1 accuracy.
    """
    task = stored.get("task")
    return str(task.get("metric", "accuracy")) if isinstance(task, dict) else "accuracy"


# ------------------------------------------------------------------ a study's record
#: what a study stored without the ``autocompress`` attribute (its record's version) reads as
STUDY_VERSION_BEFORE_VERSIONING = 1


def study_version(about: Any) -> Any:
    """The version of a study's record, from its ``autocompress`` attribute (objectives, schema_version).

    Reads: a study that holds no such attribute (made before it was stored, or by hand around a
    config) is version 1, the only version there has been. Whatever else is stored is returned
    as it is, for the caller to judge.
    """
    if not isinstance(about, dict):
        return STUDY_VERSION_BEFORE_VERSIONING
    return about.get("schema_version", STUDY_VERSION_BEFORE_VERSIONING)


# ------------------------------------------------------------------ a trial's record
#: what a trial written before its record carried ``record_version`` reads as
RECORD_VERSION_BEFORE_VERSIONING = 1


def record_version(attrs: Mapping[str, Any]) -> Any:
    """The record version of a trial's user attributes.

    Reads: trials written before the record carried ``record_version`` (every trial of 0.1.0,
    e.g. tests/fixtures/study-v1.db): version 1, the format studies have been written in from
    the start. Whatever else is stored is returned as it is, for the caller to judge.
    """
    return attrs.get("record_version", RECORD_VERSION_BEFORE_VERSIONING)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def estimate(d: Any) -> dict[str, Any] | None:
    """The fields of a stored proportion with its interval (``value``, ``ci_low``, ``ci_high``,
    ``n``: a trial's or the teacher's ``accuracy``), or ``None`` when ``d`` holds no value.

    Reads: every record version (1); an estimate stored without its interval or size reads as
    the value alone (interval the value itself, ``n`` 0), so a damaged or hand-made one still shows.
    """
    if not isinstance(d, dict) or _num(d.get("value")) is None:
        return None
    value = float(d["value"])
    low, high, n = _num(d.get("ci_low")), _num(d.get("ci_high")), d.get("n")
    return {
        "value": value,
        "ci_low": value if low is None else low,
        "ci_high": value if high is None else high,
        "n": n if isinstance(n, int) and not isinstance(n, bool) else 0,
    }


def metric(d: Any) -> dict[str, Any] | None:
    """The fields of a stored task metric (an :func:`estimate` with its ``name``), or ``None``.

    Reads: metrics stored before they carried a ``name``, when accuracy was the only metric:
    they are accuracy.
    """
    base = estimate(d)
    if base is None:
        return None
    # a metric in its own unit (perplexity, KL) keeps it beside the relative value
    own = {k: float(d[k]) for k in ("natural", "natural_low", "natural_high", "teacher_natural")
           if _num(d.get(k)) is not None}
    return {**base, "name": str(d.get("name", "accuracy")), **own}


def score(named: Any, accuracy: Any) -> Any:
    """The task metric of a trial or teacher: its ``metric``, or its ``accuracy``.

    Reads: trials and teachers stored before ``task.metric`` existed hold ``accuracy`` alone, and
    accuracy was what their first objective measured.
    """
    return named if named is not None else accuracy


def size_bytes(shipped: int | None, effective: int) -> int:
    """The bytes a stored size counts for the size objective: the shipped file's.

    Reads: sizes stored before the shipped bytes were measured (no ``shipped_bytes``, e.g. the
    version-1 study of 0.1.0) counted ``effective_bytes`` (the serialised state dict with
    simulated weights at their width): that is what their objective was.
    """
    return shipped if shipped is not None else effective


# ------------------------------------------------------------------ an export directory
#: export directory formats that load: 1 (float weights, bit-widths re-applied from plan.yaml at
#: load time) and 2 (the packed weights as they ship)
EXPORT_FORMATS = (1, 2)
#: the task kind of an export whose autocompress.json names none
EXPORT_KIND_BEFORE_KINDS = "sequence-classification"


def export_task_kind(meta: dict[str, Any]) -> str:
    """The task kind an export directory's ``autocompress.json`` was written for.

    Reads: exports written before task kinds existed (format 1 and early format 2) name none;
    they are sequence classifiers.
    """
    return str(meta.get("task_kind", EXPORT_KIND_BEFORE_KINDS))


def export_weights_are_float(meta: dict[str, Any]) -> bool:
    """True when an export directory stores float weights whose bit-widths are applied at load time.

    Reads: format 1 (before weights were packed as they ship): ``model.safetensors`` holds the
    float student and ``plan.yaml`` says the bit-widths to apply to it.
    """
    return meta.get("format_version") == 1
