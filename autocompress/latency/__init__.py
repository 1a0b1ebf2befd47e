"""Latency: the measuring protocol, the inputs a profile times, the cost model and its predictions,
and other runtimes (``runtimes/``). The profiles themselves are settings (:mod:`autocompress.schema.profile`)."""

from autocompress.latency import generation as _generation  # times generation workloads for measure
from autocompress.latency.measure import LatencyResult, measure_pair
from autocompress.schema.profile import DeviceProfile

__all__ = ["DeviceProfile", "LatencyResult", "measure_pair"]
