"""GPU memory, read at each scrape (``torch.cuda.memory_allocated`` / ``memory_reserved``).

Only where an engine already uses CUDA in this process: the collector never imports torch (the
bot with a Redis queue has none) and never initialises CUDA from the server's thread.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class GpuMemoryCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        families = {
            "allocated": GaugeMetricFamily(
                "outpaint_gpu_memory_allocated_bytes",
                "GPU memory held by tensors (torch.cuda.memory_allocated).",
                labels=["device"],
            ),
            "reserved": GaugeMetricFamily(
                "outpaint_gpu_memory_reserved_bytes",
                "GPU memory reserved by torch's caching allocator (torch.cuda.memory_reserved).",
                labels=["device"],
            ),
            "peak": GaugeMetricFamily(
                "outpaint_gpu_memory_peak_allocated_bytes",
                "Most GPU memory held by tensors since the process started "
                "(torch.cuda.max_memory_allocated).",
                labels=["device"],
            ),
        }
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            families["allocated"].add_metric([device], torch.cuda.memory_allocated(index))
            families["reserved"].add_metric([device], torch.cuda.memory_reserved(index))
            families["peak"].add_metric([device], torch.cuda.max_memory_allocated(index))
        yield from families.values()
