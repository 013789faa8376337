"""Reading a process's metrics and health endpoints in tests (blocking: from a coroutine, call
them through ``asyncio.to_thread``, or an in-process bot's event loop cannot answer)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def health(base_url: str, path: str) -> tuple[int, dict[str, Any]]:
    status, body = get(base_url + path)
    return status, json.loads(body)


def scrape(base_url: str) -> Samples:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    status, text = get(base_url + "/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is not there (a counter that never moved)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
