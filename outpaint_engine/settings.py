"""Settings shared by the engine, the workers and the bot, from the environment or ``.env``.

Every variable has the ``OUTPAINT_`` prefix (``OUTPAINT_MODEL``, ``OUTPAINT_QUEUE``...); the bot's
own settings (token, limits) live in :mod:`bot.settings`. ``.env.example`` lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

_CONFIG = SettingsConfigDict(env_prefix="OUTPAINT_", env_file=".env", extra="ignore", env_ignore_empty=True)
"""Empty ``KEY=`` lines (as in a copied ``.env.example``) count as unset."""


def describe_setting_error(error: ValidationError) -> str:
    """One line naming the first bad variable, e.g. ``bad setting OUTPAINT_WINDOW: Input should be...``."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    name = field if field.isupper() else f"OUTPAINT_{field.upper()}"  # DISCORD_TOKEN is an alias
    return f"bad setting {name}: {first['msg']}"


class EngineSettings(BaseSettings):
    """Which models to load and how to run them."""

    model_config = _CONFIG

    model: str = Field(
        "SG161222/RealVisXL_V4.0",
        description="SDXL model: a hub id, a local diffusers folder or a single .safetensors file.",
    )
    ip_adapter: str = Field(
        "h94/IP-Adapter",
        description="IP-Adapter repo (hub id or local folder in the h94 layout); empty turns it off.",
    )
    ip_adapter_weight: str = "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors"
    image_encoder: str = "models/image_encoder"
    device: str = Field("auto", description="auto, cuda, cuda:N, mps or cpu.")
    dtype: str = Field("auto", description="auto, fp16, bf16 or fp32 (auto: bf16 on CUDA, fp32 on CPU).")
    low_vram: bool = Field(False, description="Model CPU offload: slower, fits small GPUs.")
    compile: Literal["auto", "off", "graphs", "regional", "default", "reduce-overhead"] = Field(
        "auto",
        description="How the UNet runs on CUDA: 'auto' = 'regional' on CUDA, eager elsewhere; 'off' "
        "eager; 'graphs' eager kernels replayed from CUDA graphs; 'regional' its repeated blocks "
        "compiled, replayed from CUDA graphs; 'default' / 'reduce-overhead' the whole UNet compiled "
        "(without / with CUDA graphs). Compiled kernels are cached on disk (compile_cache_dir).",
    )
    compile_cache_dir: Path | None = Field(
        None,
        description="Where compiled kernels are kept across restarts (TORCHINDUCTOR_CACHE_DIR wins "
        "when set); empty = torch's default under /tmp.",
    )
    compile_vae: bool = Field(False, description="Also compile the VAE's blocks (with OUTPAINT_COMPILE).")
    static_context: bool = Field(
        True,
        description="Compute the cross-attention keys and values of the prompt and the crops once per "
        "window instead of at every denoising step (same result; not with low_vram).",
    )
    fp8: bool = Field(
        False,
        description="Run the UNet's large linear layers in float8 (CUDA compute capability 8.9+, torchao).",
    )
    batch_jobs: int | None = Field(
        None,
        ge=1,
        le=8,
        description="Jobs one worker runs at once, their denoising steps batched into one UNet call; "
        "empty = 4 on CUDA (without low-VRAM mode), 1 elsewhere.",
    )
    fill: Literal["telea", "telea-fast"] = Field(
        "telea-fast",
        description="Pre-fill of the new strip: 'telea-fast', Telea at a quarter of the resolution "
        "(16x less CPU work; see docs/engine.md for its measured effect), or 'telea' at full resolution.",
    )
    window: int = Field(1024, description="Generation window in px (a multiple of 64).")
    steps: int = 25
    guidance: float = 4.0
    ip_scale: float = 0.1
    captioner: str = Field(
        "",
        description="What writes the prompt of a job without one (docs/captioner.md): empty = off; "
        "'openai' = an OpenAI-compatible chat-completions server (OUTPAINT_CAPTIONER_URL, _MODEL, "
        "_API_KEY); anything else = a local vision-language model (hub id or folder).",
    )
    captioner_url: str = Field(
        "",
        description="The server's API base, e.g. http://localhost:8000/v1 (vLLM) or "
        "http://localhost:11434/v1 (Ollama).",
    )
    captioner_model: str = Field("", description="The model name the server knows.")
    captioner_api_key: SecretStr | None = Field(None, description="Bearer token, if the server wants one.")
    captioner_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for a prompt, all tries together (a local model stops then)."
    )
    captioner_retries: int = Field(2, ge=0, le=10, description="Retries after a 429, a 5xx or no connection.")
    captioner_backoff_s: float = Field(
        1.0, ge=0, description="Wait before the first retry, doubled for each next one (Retry-After wins)."
    )
    captioner_max_tokens: int = Field(60, ge=8, le=512, description="Longest answer, in tokens.")


class QueueSettings(BaseSettings):
    """Where jobs live and how workers recover them."""

    model_config = _CONFIG

    queue: str = Field("embedded", description="'embedded' (one machine) or a redis:// URL.")
    data_dir: Path = Field(Path("data"), description="Journal, images and checkpoints (embedded queue).")
    heartbeat_s: float = Field(5.0, description="How often a running worker says it is alive.")
    reclaim_after_s: float = Field(30.0, description="A job whose worker is silent this long is reclaimed.")
    max_deliveries: int = Field(
        3,
        description="Deliveries without progress (no new expansion stored) before a job fails "
        "(Redis: and goes to the dead-letter stream); a delivery that stores a step does not count.",
    )
    queue_timeout_s: float = Field(
        3.0,
        gt=0,
        description="How long one call to the queue's backend may wait for an answer (Redis, or the "
        "embedded journal's lock) before it fails as 'queue unavailable'.",
    )
    result_ttl_s: int = Field(
        7 * 24 * 3600, description="How long a finished job (its record, events and images) is kept."
    )


class OpsSettings(BaseSettings):
    """The operator's view of a process: the metrics and health endpoints, and the log format."""

    model_config = _CONFIG

    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve /metrics (Prometheus), /healthz and /readyz on this port; empty = off "
        "(0 = any free port, for tests).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="The address the metrics server listens on (loopback by default)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="'text' (one readable line per record) or 'json' (one JSON object per line)."
    )
