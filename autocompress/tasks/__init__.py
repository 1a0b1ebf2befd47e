"""Task kinds: what the model does. Each registered kind (:mod:`~.kind`) owns its data and splits,
its metric(s) with their intervals, teacher preparation, distillation loss, the inputs latency is
timed on, whether exits attach and the export's pipeline. Sequence classification
(:mod:`~.classification`) and causal language modelling (:mod:`~.causal_lm`) are the built-in kinds;
importing them here makes ``task.kind`` find them."""

from autocompress.tasks import causal_lm as _causal_lm  # noqa: F401  (registers the decoder kind and its bundled model)
from autocompress.tasks import classification as _classification  # noqa: F401  (registers the built-in kind)
