"""Ship a chosen trial: pick it, rebuild its model from the plan, write a deployable directory, load it.

``pick_trial(study, "fastest with accuracy drop <= 1")`` chooses; ``export_trial`` writes the
directory (weights, plan, tokenizer, metrics, optionally ONNX) after checking that it reproduces
the trial's model; ``load(DIR)`` gives the model back, ready for ``transformers.pipeline``.
"""

from autocompress.export.pick import GRAMMAR, Budget, exportable_trial, parse_pick, pick_trial
from autocompress.export.saved import load
from autocompress.export.ship import ExportResult, LatencyRow, export_trial

__all__ = [
    "GRAMMAR",
    "Budget",
    "ExportResult",
    "LatencyRow",
    "export_trial",
    "exportable_trial",
    "load",
    "parse_pick",
    "pick_trial",
]
