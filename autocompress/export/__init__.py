"""Ship a chosen trial: pick it, rebuild its model from the plan, write a deployable directory, load it.

``pick_trial(study, "fastest with accuracy drop <= 1")`` chooses; ``export_trial`` writes the
directory (weights, plan, tokenizer, metrics, optionally ONNX) after checking that it reproduces
the trial's model (a decoder: that it generates the trial model's tokens); ``load(DIR)`` gives the
model back, ready for ``transformers.pipeline`` (text classification, or text generation).
"""

from autocompress.export.pick import GRAMMAR, Budget, exportable_trial, parse_pick, pick_trial
from autocompress.export.saved import load
from autocompress.export.ship import ExportResult, GenerationCheck, LatencyRow, export_trial

__all__ = [
    "GRAMMAR",
    "Budget",
    "ExportResult",
    "GenerationCheck",
    "LatencyRow",
    "export_trial",
    "exportable_trial",
    "load",
    "parse_pick",
    "pick_trial",
]
