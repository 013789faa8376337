"""Loading the SDXL and IP-Adapter models, and the encoders around the denoising loop.

:func:`load_models` turns :class:`~outpaint_engine.settings.EngineSettings` into a :class:`Models`:
the SDXL img2img components (from a hub id, a local diffusers folder or a single ``.safetensors``
checkpoint), DPM++ 2M Karras as scheduler, and optionally IP-Adapter Plus with its image encoder.
:class:`Models` also holds the small encode/decode steps (text, image crops, VAE) so that
:mod:`outpaint_engine.runner` only orchestrates and :mod:`outpaint_engine.differential` only loops.

``StableDiffusionXLImg2ImgPipeline`` serves as a container of components (and for its prompt
encoder); its ``__call__`` is never used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLImg2ImgPipeline

from outpaint_engine import fast_unet, window_context
from outpaint_engine.batching import UNetBatcher
from outpaint_engine.captioner import Captioner
from outpaint_engine.captioner.local import LocalCaptioner, load_vision_language_model
from outpaint_engine.captioner.remote import OpenAICaptioner
from outpaint_engine.crop_pixels import CropPixels
from outpaint_engine.differential import Conditioning, check_scheduler
from outpaint_engine.settings import EngineSettings

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one line fit to show a user."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r} (use auto, cuda, cuda:N, mps or cpu)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("CUDA was requested but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("MPS was requested but is not available on this machine")
    if device.type not in ("cuda", "mps", "cpu"):
        raise ModelLoadError(f"unsupported device {name!r} (use auto, cuda, cuda:N, mps or cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA (fp16 where bf16 is missing), fp16 on MPS, fp32 on the CPU."""
    name = name.strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r} (use auto, fp16, bf16 or fp32)")
    return DTYPES[name]


def dpmpp_2m_karras(config: dict) -> DPMSolverMultistepScheduler:
    """DPM++ 2M Karras built from a model's own scheduler config (its betas and training steps)."""
    return DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    )


def _short(exc: BaseException) -> str:
    """The first line of an exception message, trimmed for a one-line error."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _reason(exc: BaseException, *, uses_hub: bool) -> str:
    """Why a load failed, in words; the usual hub failures get a plain explanation."""
    from huggingface_hub import constants, errors

    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    text = " ".join(str(e) for e in chain)
    offline = any(isinstance(e, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)) for e in chain)
    offline = offline or "outgoing traffic has been disabled" in text
    if uses_hub and (offline or (constants.HF_HUB_OFFLINE and isinstance(exc, OSError))):
        return "its files are not in the local Hugging Face cache and the hub is offline or unreachable"
    if any(isinstance(e, errors.GatedRepoError) for e in chain):
        return "the repository is gated: accept its terms on the hub, then log in (hf auth login)"
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain):
        return "no such repository on the Hugging Face hub"
    return _short(exc)


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.endswith(SINGLE_FILE_SUFFIXES) or "\\" in source


def _has_fp16_variant(folder: Path) -> bool:
    return any(".fp16." in p.name for p in folder.rglob("*"))


def _load_pipeline(
    source: str, dtype: torch.dtype, single_file_config: str | None
) -> StableDiffusionXLImg2ImgPipeline:
    path = Path(source).expanduser()
    half = dtype in (torch.float16, torch.bfloat16)
    try:
        if path.is_file():
            if path.suffix not in SINGLE_FILE_SUFFIXES:
                raise ModelLoadError(f"model file {source!r} is not a .safetensors or .ckpt checkpoint")
            kwargs: dict = {"dtype": dtype}
            if single_file_config:
                kwargs |= {
                    "config": single_file_config,
                    "local_files_only": Path(single_file_config).is_dir(),
                }
            return StableDiffusionXLImg2ImgPipeline.from_single_file(str(path), **kwargs)
        if path.is_dir():
            variant = "fp16" if half and _has_fp16_variant(path) else None
            return StableDiffusionXLImg2ImgPipeline.from_pretrained(
                str(path), dtype=dtype, variant=variant, local_files_only=True
            )
        if _looks_like_path(source):
            raise ModelLoadError(f"model not found: {source!r} is neither a file nor a folder")
        if half:
            try:
                return StableDiffusionXLImg2ImgPipeline.from_pretrained(source, dtype=dtype, variant="fp16")
            except (OSError, ValueError) as exc:
                log.info("no fp16 variant of %s (%s); loading the full weights", source, _short(exc))
        return StableDiffusionXLImg2ImgPipeline.from_pretrained(source, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # the loaders raise OSError, ValueError, EnvironmentError, KeyError...
        uses_hub = not path.is_dir() and not (
            path.is_file() and single_file_config and Path(single_file_config).is_dir()
        )
        raise ModelLoadError(f"could not load model {source!r}: {_reason(exc, uses_hub=uses_hub)}") from exc


def _load_ip_adapter(pipe: StableDiffusionXLImg2ImgPipeline, settings: EngineSettings) -> None:
    source = settings.ip_adapter
    local = Path(source).expanduser()
    if _looks_like_path(source) and not local.is_dir():
        raise ModelLoadError(f"IP-Adapter not found: {source!r} is not a folder")
    weight = Path(settings.ip_adapter_weight)
    try:
        pipe.load_ip_adapter(
            str(local) if local.is_dir() else source,
            subfolder=weight.parent.as_posix() if weight.parent != Path() else "",
            weight_name=weight.name,
            image_encoder_folder=settings.image_encoder,
            local_files_only=local.is_dir() or None,
        )
    except Exception as exc:  # see _load_pipeline
        reason = _reason(exc, uses_hub=not local.is_dir())
        raise ModelLoadError(f"could not load IP-Adapter {source!r}: {reason}") from exc


def _check_time_ids(pipe: StableDiffusionXLImg2ImgPipeline) -> None:
    unet = pipe.unet.config
    pooled = pipe.text_encoder_2.config.projection_dim
    if unet.projection_class_embeddings_input_dim != 6 * unet.addition_time_embed_dim + pooled:
        raise ModelLoadError(
            "this model expects an aesthetic score (an SDXL refiner?); use an SDXL base model"
        )


@dataclass
class Models:
    """Loaded SDXL components plus the encoders the runner needs around the denoising loop.

    The denoising loop calls :attr:`batcher` rather than the UNet: it runs the UNet as
    ``OUTPAINT_COMPILE`` prepared it (:mod:`outpaint_engine.fast_unet`) and batches the calls of
    jobs that run at the same time (:mod:`outpaint_engine.batching`).
    """

    pipe: StableDiffusionXLImg2ImgPipeline
    ip_adapter: bool
    device: torch.device  # where the computation runs (the GPU even when weights are offloaded)
    compile_mode: str = "off"  # the resolved OUTPAINT_COMPILE (never "auto")
    unet_call: Callable[..., tuple[torch.Tensor, ...]] | None = None  # the UNet as prepared; None = eager
    # The cross-attention projections taken out of the UNet (OUTPAINT_STATIC_CONTEXT), else None.
    context: window_context.WindowContext | None = None
    batcher: UNetBatcher = field(init=False, repr=False)
    _uncond_image: torch.Tensor | None = field(default=None, repr=False)
    _crop_pixels: CropPixels | None = field(default=None, repr=False)  # the crops' preprocessing on the GPU
    _ip_scale: float | None = field(default=None, repr=False)
    _text_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.batcher = UNetBatcher(self.unet_call or self.pipe.unet)
        if self.ip_adapter and self.device.type == "cuda":  # on a CPU, Pillow is the faster
            self._crop_pixels = CropPixels.matching(self.pipe.feature_extractor)

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def compiled(self) -> bool:
        """The UNet is compiled or graphed: :meth:`Outpainter.warm_up` should run before jobs."""
        return self.compile_mode != "off"

    def new_scheduler(self) -> DPMSolverMultistepScheduler:
        """A fresh scheduler (schedulers hold per-run state), configured like the loaded one."""
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    def set_ip_adapter_scale(self, scale: float) -> None:
        if not self.ip_adapter or scale == self._ip_scale:
            return
        self.pipe.set_ip_adapter_scale(scale)
        self._ip_scale = scale
        if isinstance(self.unet_call, fast_unet.GraphedUNet):
            self.unet_call.reset()  # the scale is baked into captured graphs

    # --- conditioning -------------------------------------------------------------------------

    def encode_text(
        self, prompt: str, negative_prompt: str, *, guidance: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings and pooled embeddings, negative first when ``guidance`` is on.

        One job at a time: the tokenizers change their own padding state while they work.
        """
        with self._text_lock:
            embeds, neg, pooled, neg_pooled = self.pipe.encode_prompt(
                prompt=prompt,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guidance,
                negative_prompt=negative_prompt,
            )
        if guidance:
            return torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        return embeds, pooled

    def _image_encoder_states(self, pixels: torch.Tensor) -> torch.Tensor:
        encoder = self.pipe.image_encoder
        pixels = pixels.to(self.device, next(encoder.parameters()).dtype)
        return encoder(pixels, output_hidden_states=True).hidden_states[-2]

    def encode_crops(self, crops: list[np.ndarray], *, guidance: bool) -> list[torch.Tensor]:
        """IP-Adapter Plus image embeddings of several crops, for one adapter.

        The result is ``[tensor of shape (batch, n_crops, tokens, width)]``: the UNet's resampler
        turns each crop into 16 tokens and the attention layers read all ``n_crops × 16`` tokens
        as one concatenated sequence (the crops are not averaged). The unconditional branch is the
        encoder run on an all-zero input, which does not depend on the crops, so it is cached.
        """
        processor = self.pipe.feature_extractor
        if self._crop_pixels is not None:
            pixels = self._crop_pixels(crops, self.device)
        elif getattr(processor, "backend", None) == "torchvision" and self.device.type == "cuda":
            pixels = processor(images=crops, return_tensors="pt", device=self.device).pixel_values
        else:
            pixels = processor(images=crops, return_tensors="pt").pixel_values
        states = self._image_encoder_states(pixels)[None]
        if not guidance:
            return [states]
        if self._uncond_image is None:
            self._uncond_image = self._image_encoder_states(torch.zeros_like(pixels[:1]))
        uncond = self._uncond_image.expand(len(crops), -1, -1)[None]
        return [torch.cat([uncond, states])]

    def time_ids(self, size: int, batch: int) -> torch.Tensor:
        """SDXL micro-conditioning for a ``size``² window: original size, crop (0, 0), target size."""
        ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=self.pipe.text_encoder_2.dtype)
        return ids.repeat(batch, 1).to(self.device)

    def conditioning(
        self, text: tuple[torch.Tensor, torch.Tensor], image: list[torch.Tensor] | None, size: int
    ) -> Conditioning:
        embeds, pooled = text
        if self.context is not None:  # the UNet takes its keys and values, computed here once
            embeds, image = self.context.pack(embeds, image)
        return Conditioning(embeds, pooled, self.time_ids(size, embeds.shape[0]), image)

    # --- VAE ----------------------------------------------------------------------------------

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → scaled latents (1, 4, H/8, W/8), float32."""
        vae = self.pipe.vae
        # Converted where it runs: uint8 crosses to the GPU, a quarter of the bytes of float32.
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        pixels = pixels.permute(2, 0, 1)[None].float() / 127.5 - 1
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
        return latents.float() * vae.config.scaling_factor

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (1, 4, h, w) → (8h)×(8w)×3 uint8 RGB, left on the device."""
        vae = self.pipe.vae
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        pixels = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round()
        return pixels.to(torch.uint8).permute(1, 2, 0)

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (1, 4, h, w) → (8h)×(8w)×3 uint8 RGB."""
        return self.decode_pixels(latents).cpu().numpy()


def _accelerate(
    pipe: StableDiffusionXLImg2ImgPipeline, settings: EngineSettings, device: torch.device
) -> tuple[str, Callable[..., tuple[torch.Tensor, ...]] | None]:
    """Prepare the UNet (and VAE) as ``OUTPAINT_COMPILE`` / ``OUTPAINT_FP8`` ask; returns the
    resolved compile mode and what the loop calls (None: the plain UNet)."""
    mode = fast_unet.resolve_compile(settings.compile, device, settings.low_vram)
    fp8 = settings.fp8
    if fp8 and (reason := fast_unet.fp8_supported(device)) is not None:
        log.warning("OUTPAINT_FP8 ignored: %s", reason)
        fp8 = False
    if mode != "off":
        fast_unet.use_compile_cache(settings.compile_cache_dir)
    unet_call = fast_unet.accelerate_unet(pipe.unet, mode, fp8=fp8)
    if settings.compile_vae and mode != "off":
        log.info("compiling %d VAE blocks", fast_unet.compile_regions(pipe.vae))
    return mode, (None if unet_call is pipe.unet else unet_call)


def load_models(settings: EngineSettings, *, single_file_config: str | None = None) -> Models:
    """Load everything ``settings`` names, placed on its device (or offloaded in low-VRAM mode).

    ``single_file_config`` (a hub id or a local diffusers folder) supplies the component configs
    for a single-file checkpoint; without it diffusers fetches the SDXL base configs once.
    """
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    pipe = _load_pipeline(settings.model, dtype, single_file_config)
    pipe.scheduler = dpmpp_2m_karras(pipe.scheduler.config)
    check_scheduler(pipe.scheduler)
    _check_time_ids(pipe)
    ip_adapter = bool(settings.ip_adapter.strip())
    if ip_adapter:
        _load_ip_adapter(pipe, settings)  # before the VAE upcast: it takes the pipeline's dtype
    if dtype == torch.float16 and pipe.vae.config.force_upcast:
        pipe.vae.to(torch.float32)  # the SDXL VAE overflows in fp16
    offload = settings.low_vram and device.type == "cuda"
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        if settings.low_vram:
            log.warning("low-VRAM mode only applies to CUDA; running on %s as usual", device)
        pipe.to(device)
    context = None
    if settings.static_context and not offload:  # offloading moves the stock UNet as a whole
        context = window_context.install(pipe.unet)
    mode, unet_call = _accelerate(pipe, settings, device)
    pipe.set_progress_bar_config(disable=True)
    models = Models(pipe, ip_adapter, pipe._execution_device, mode, unet_call, context=context)
    models.set_ip_adapter_scale(settings.ip_scale)
    return models


def load_captioner(settings: EngineSettings) -> Captioner | None:
    """The optional prompt writer named by ``settings.captioner`` (None when empty).

    ``openai``: the OpenAI-compatible server at ``captioner_url`` (nothing is contacted here).
    Anything else: a local vision-language model (hub id or folder), loaded on its first caption.
    Raises :class:`ModelLoadError` for a setting that cannot work (a missing folder, no URL).
    """
    source = settings.captioner.strip()
    if not source:
        return None
    if source.lower() == "openai":
        return _openai_captioner(settings)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    local = Path(source).expanduser().is_dir()
    if _looks_like_path(source) and not local:
        raise ModelLoadError(f"captioner not found: {source!r} is not a folder")
    offload = settings.low_vram and device.type == "cuda"

    def load() -> tuple[torch.nn.Module, object]:
        try:
            return load_vision_language_model(source, device, dtype, offload=offload)
        except Exception as exc:  # see _load_pipeline
            reason = _reason(exc, uses_hub=not local)
            raise ModelLoadError(f"could not load captioner {source!r}: {reason}") from exc

    log.info("captioner: %s, loaded on its first caption", source)
    return LocalCaptioner(
        load,
        device,
        name=source,
        offload=offload,
        max_new_tokens=settings.captioner_max_tokens,
        timeout_s=settings.captioner_timeout_s,
    )


def _openai_captioner(settings: EngineSettings) -> OpenAICaptioner:
    url, model = settings.captioner_url.strip(), settings.captioner_model.strip()
    if not url.startswith(("http://", "https://")):
        raise ModelLoadError(
            "OUTPAINT_CAPTIONER=openai needs OUTPAINT_CAPTIONER_URL, the server's http(s):// API base "
            "(e.g. http://localhost:8000/v1)"
        )
    if not model:
        raise ModelLoadError(
            "OUTPAINT_CAPTIONER=openai needs OUTPAINT_CAPTIONER_MODEL, a model the server has"
        )
    captioner = OpenAICaptioner(
        url,
        model,
        api_key=settings.captioner_api_key,
        timeout_s=settings.captioner_timeout_s,
        retries=settings.captioner_retries,
        backoff_s=settings.captioner_backoff_s,
        max_tokens=settings.captioner_max_tokens,
    )
    log.info("captioner: %s at %s", model, captioner.where)
    return captioner
