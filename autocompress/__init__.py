"""autocompress: search compression plans for Hugging Face encoder classifiers, and ship the chosen one.

The Python API (:mod:`autocompress.api`) does what the ``autocompress`` command does::

    import autocompress

    small = autocompress.apply_plan(model, "plan.yaml")                 # compress a model by a plan
    study = autocompress.run_study("search_spaces/tweets.yaml", trials=20,
                                   on_trial=lambda e: print(e.trial.number, e.trial.metric))
    study.front()                                                       # typed rows, fastest first
    autocompress.export_trial(study, "model/", pick="fastest with accuracy drop <= 1")
    model = autocompress.load("model/")

Importing this package is cheap: the API and its dependencies (torch, transformers, Optuna) load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autocompress.api import (
        Study,
        TrialEvent,
        TrialResult,
        apply_plan,
        export_trial,
        load,
        load_config,
        open_study,
        run_study,
        write_report,
    )
    from autocompress.errors import AutocompressError
    from autocompress.schema.config import StudyConfig
    from autocompress.schema.plan import CompressionPlan

__all__ = [
    "AutocompressError",
    "CompressionPlan",
    "Study",
    "StudyConfig",
    "TrialEvent",
    "TrialResult",
    "apply_plan",
    "export_trial",
    "load",
    "load_config",
    "open_study",
    "run_study",
    "write_report",
]

#: where each public name lives; the module is imported when the name is first used
_HOMES = {
    **{name: "autocompress.api" for name in __all__},
    "AutocompressError": "autocompress.errors",
    "CompressionPlan": "autocompress.schema.plan",
    "StudyConfig": "autocompress.schema.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'autocompress' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
