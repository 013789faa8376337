"""Engine fixtures: tiny random SDXL + IP-Adapter models on disk, and an engine loaded from them.

Also the switch for GPU-only tests (``@pytest.mark.gpu``, run with OUTPAINT_TEST_GPU=1).

Nothing in the tests may reach the network: the hub is switched off before any library reads it.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from pathlib import Path
from typing import Any

import pytest

TINY_WINDOW = 64
TINY_STEPS = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests run only with OUTPAINT_TEST_GPU=1 (on a CUDA machine)."""
    if os.environ.get("OUTPAINT_TEST_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; set OUTPAINT_TEST_GPU=1 to run")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``sdxl/`` and ``ip-adapter/``, built once per test session."""
    from tests.tiny_models import save_ip_adapter, save_sdxl

    root = tmp_path_factory.mktemp("tiny-models")
    save_ip_adapter(root / "ip-adapter", save_sdxl(root / "sdxl"))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models_root: Path) -> Path:
    """A tiny SDXL model in the diffusers folder layout."""
    return tiny_models_root / "sdxl"


@pytest.fixture(scope="session")
def tiny_ip_adapter_dir(tiny_models_root: Path) -> Path:
    """A tiny IP-Adapter Plus SDXL repo in the h94 layout."""
    return tiny_models_root / "ip-adapter"


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA with its processor, for the optional captioner."""
    from tests.tiny_models import save_captioner

    return save_captioner(tmp_path_factory.mktemp("tiny-captioner"))


@pytest.fixture(scope="session")
def tiny_classifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny ViT image classifiers for the content check, each with fixed scores for any image:
    ``unsafe`` (nsfw 0.99), ``safe`` (nsfw 0.01), ``mixed`` (normal 0.4, porn 0.3, hentai 0.3)."""
    from tests.tiny_models import save_image_classifier

    root = tmp_path_factory.mktemp("tiny-classifiers")
    scores = {
        "unsafe": {"normal": 0.01, "nsfw": 0.99},
        "safe": {"normal": 0.99, "nsfw": 0.01},
        "mixed": {"normal": 0.4, "porn": 0.3, "hentai": 0.3},
    }
    return {name: save_image_classifier(root / name, s) for name, s in scores.items()}


@pytest.fixture(scope="session")
def tiny_engine_settings(tiny_model_dir: Path, tiny_ip_adapter_dir: Path) -> dict[str, Any]:
    """Overrides for ``Outpainter.load`` that select the tiny models on the CPU."""
    return {
        "model": str(tiny_model_dir),
        "ip_adapter": str(tiny_ip_adapter_dir),
        "device": "cpu",
        "dtype": "fp32",
        "low_vram": False,
        "captioner": "",
        "window": TINY_WINDOW,
        "steps": TINY_STEPS,
    }


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_settings: dict[str, Any]):
    """An :class:`outpaint_engine.runner.Outpainter` on the tiny models, with the IP-Adapter."""
    from outpaint_engine.runner import Outpainter

    return Outpainter.load(**tiny_engine_settings)


@pytest.fixture(scope="session")
def tiny_engine_no_ip(tiny_engine_settings: dict[str, Any]):
    """The same engine without the IP-Adapter."""
    from outpaint_engine.runner import Outpainter

    return Outpainter.load(**{**tiny_engine_settings, "ip_adapter": ""})
