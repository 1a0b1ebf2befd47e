"""Latency: device profiles and the measuring protocol."""

from autocompress.latency.measure import LatencyResult, measure_pair
from autocompress.latency.profile import DeviceProfile

__all__ = ["DeviceProfile", "LatencyResult", "measure_pair"]
