"""Task kinds: what the model does. Each registered kind owns its data and splits, its metric(s) with
their intervals, teacher preparation, distillation loss, the inputs latency is timed on, what an exit
head attaches to and the export's pipeline."""
