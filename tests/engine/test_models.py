"""Model loading through the real diffusers/transformers loaders, from tiny models on disk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import save_file

from outpaint_engine import fast_unet
from outpaint_engine.models import ModelLoadError, load_models, resolve_device, resolve_dtype
from outpaint_engine.runner import Outpainter
from outpaint_engine.settings import EngineSettings
from tests.tiny_models import IMAGE_ENCODER_WIDTH, IMAGE_TOKENS


def _settings(base: dict[str, Any], **changes: Any) -> EngineSettings:
    return EngineSettings(**{**base, **changes})


def _crops(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(n)]


def test_loads_a_diffusers_folder_with_ip_adapter(tiny_engine) -> None:
    models = tiny_engine.models
    pipe = models.pipe
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.use_karras_sigmas
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert pipe.scheduler.config.solver_order == 2
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # kept from the model's own config
    assert models.ip_adapter
    assert pipe.image_encoder is not None
    assert pipe.unet.encoder_hid_proj is not None
    assert any(isinstance(p, IPAdapterAttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert models.device == torch.device("cpu")
    assert pipe.unet.dtype == torch.float32


def test_ip_adapter_can_be_switched_off(tiny_engine_no_ip) -> None:
    pipe = tiny_engine_no_ip.models.pipe
    assert not tiny_engine_no_ip.models.ip_adapter
    assert pipe.image_encoder is None
    assert pipe.unet.encoder_hid_proj is None


def test_six_crops_become_six_times_sixteen_concatenated_tokens(tiny_engine_settings: dict[str, Any]) -> None:
    # The stock UNet, whose IP-Adapter layers see the tokens (test_window_context checks the packed ones).
    models = Outpainter.load(**tiny_engine_settings, static_context=False).models
    crops = _crops()
    with torch.no_grad():
        embeds = models.encode_crops(crops, guidance=True)
        reference = models.pipe.prepare_ip_adapter_image_embeds(
            [crops], None, models.device, 1, do_classifier_free_guidance=True
        )
    assert len(embeds) == 1
    assert embeds[0].shape == (2, 6, 257, IMAGE_ENCODER_WIDTH)  # negative + positive, 6 crops, ViT tokens
    torch.testing.assert_close(embeds[0], reference[0])  # our cached negative branch equals diffusers'

    # What the attention layers see: 6 images × 16 resampler tokens, one sequence per sample.
    seen: list[tuple[int, ...]] = []
    processor = next(
        p for p in models.pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)
    )
    hook = processor.to_k_ip[0].register_forward_hook(
        lambda _m, args, _out: seen.append(tuple(args[0].shape))
    )
    try:
        cond = models.conditioning(models.encode_text("", "", guidance=True), embeds, 64)
        with torch.no_grad():
            models.unet(
                torch.zeros(2, 4, 8, 8),
                torch.tensor(500),
                encoder_hidden_states=cond.prompt_embeds,
                added_cond_kwargs={
                    "text_embeds": cond.pooled_embeds,
                    "time_ids": cond.time_ids,
                    "image_embeds": embeds,
                },
            )
    finally:
        hook.remove()
    assert seen and seen[0][:3] == (2, 6, IMAGE_TOKENS)  # viewed as (batch, 6·16 tokens, heads, dim)


def test_text_embeddings_have_the_sdxl_shapes(tiny_engine) -> None:
    with torch.no_grad():
        embeds, pooled = tiny_engine.models.encode_text("a nest", "", guidance=True)
        single, _ = tiny_engine.models.encode_text("a nest", "", guidance=False)
    assert embeds.shape == (2, 77, 64)
    assert pooled.shape == (2, 32)
    assert single.shape == (1, 77, 64)
    torch.testing.assert_close(single[0], embeds[1])


def test_vae_round_trip_has_the_real_8x_scale(tiny_engine) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    with torch.no_grad():
        latents = tiny_engine.models.encode_image(image)
        decoded = tiny_engine.models.decode_latents(latents)
    assert latents.shape == (1, 4, 8, 8)
    assert decoded.shape == (64, 64, 3)
    assert decoded.dtype == np.uint8


def test_fp16_keeps_the_vae_in_fp32_and_bf16_does_not(tiny_engine_settings: dict[str, Any]) -> None:
    fp16 = load_models(_settings(tiny_engine_settings, dtype="fp16", ip_adapter=""))
    assert fp16.pipe.unet.dtype == torch.float16
    assert fp16.pipe.vae.dtype == torch.float32  # force_upcast: the SDXL VAE overflows in fp16
    bf16 = load_models(_settings(tiny_engine_settings, dtype="bf16", ip_adapter=""))
    assert bf16.pipe.unet.dtype == torch.bfloat16
    assert bf16.pipe.vae.dtype == torch.bfloat16


def test_devices_and_dtypes() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            resolve_device("cuda")


def _one_line(exc: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_local_model(tiny_engine_settings: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as exc:
        load_models(_settings(tiny_engine_settings, model=str(tmp_path / "nowhere")))
    assert "not found" in _one_line(exc)


def test_hub_model_not_available_offline(tiny_engine_settings: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError) as exc:
        load_models(_settings(tiny_engine_settings, model="nobody-here/no-such-model-xyz"))
    assert "nobody-here/no-such-model-xyz" in _one_line(exc)


def test_missing_ip_adapter_folder(tiny_engine_settings: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as exc:
        load_models(_settings(tiny_engine_settings, ip_adapter=str(tmp_path / "nowhere")))
    assert "IP-Adapter" in _one_line(exc)


def test_ip_adapter_folder_without_weights(tiny_engine_settings: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as exc:
        load_models(_settings(tiny_engine_settings, ip_adapter=str(tmp_path)))
    assert "IP-Adapter" in _one_line(exc)


def test_single_file_that_is_not_an_sdxl_checkpoint(
    tiny_engine_settings: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "model.safetensors"
    save_file({"something.else": torch.zeros(2)}, str(checkpoint))
    with pytest.raises(ModelLoadError) as exc:
        load_models(_settings(tiny_engine_settings, model=str(checkpoint), ip_adapter=""))
    assert "model.safetensors" in _one_line(exc)
    other = tmp_path / "model.bin"
    other.write_bytes(b"nothing")
    with pytest.raises(ModelLoadError, match=r"\.safetensors"):
        load_models(_settings(tiny_engine_settings, model=str(other), ip_adapter=""))


def test_compile_is_auto_by_default_and_eager_off_cuda(
    tiny_engine_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert EngineSettings().compile == "auto"
    with caplog.at_level("WARNING"):
        eager = load_models(EngineSettings(**{**tiny_engine_settings, "compile": "auto"}))
    assert eager.unet._compiled_call_impl is None
    assert eager.compiled is False
    assert eager.batcher.unet is eager.unet  # the loop calls the plain UNet through the batcher
    assert "only applies to CUDA" not in caplog.text  # auto says nothing where it does not apply
    settings = EngineSettings(**{**tiny_engine_settings, "compile": "reduce-overhead"})
    with caplog.at_level("WARNING"):
        models = load_models(settings)
    assert models.unet._compiled_call_impl is None  # the CPU runs eagerly
    assert models.compiled is False
    assert "only applies to CUDA" in caplog.text


@pytest.mark.parametrize(
    ("mode", "device", "low_vram", "resolved"),
    [
        ("auto", "cuda", False, "regional"),
        ("auto", "cpu", False, "off"),
        ("auto", "cuda", True, "off"),
        ("graphs", "cuda", False, "graphs"),
        ("reduce-overhead", "cuda", False, "reduce-overhead"),
        ("default", "cuda", True, "off"),
        ("regional", "mps", False, "off"),
        ("off", "cuda", False, "off"),
    ],
)
def test_compile_mode_resolution(mode: str, device: str, low_vram: bool, resolved: str) -> None:
    assert fast_unet.resolve_compile(mode, torch.device(device), low_vram) == resolved


class _RecordingModule(torch.nn.Module):
    def __init__(self, *children: torch.nn.Module) -> None:
        super().__init__()
        self.children_ = torch.nn.ModuleList(children)
        self.compiled_with: dict[str, Any] | None = None

    def compile(self, **kwargs: Any) -> None:
        self.compiled_with = kwargs


class BasicTransformerBlock(_RecordingModule):
    """Named like diffusers' block: regional compilation picks classes by name."""


class ResnetBlock2D(_RecordingModule):
    pass


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_whole_unet_compile_modes_compile_the_unet_itself(mode: str) -> None:
    unet = _RecordingModule()
    assert fast_unet.accelerate_unet(unet, mode, fp8=False) is unet
    assert unet.compiled_with == {"mode": mode, **fast_unet.compile_options()}


def test_regional_mode_compiles_each_repeated_block_and_replays_graphs() -> None:
    blocks = [BasicTransformerBlock(), BasicTransformerBlock(), ResnetBlock2D()]
    other = _RecordingModule()
    unet = _RecordingModule(*blocks, other)
    call = fast_unet.accelerate_unet(unet, "regional", fp8=False)
    assert isinstance(call, fast_unet.GraphedUNet) and call.unet is unet
    assert [b.compiled_with for b in blocks] == [fast_unet.compile_options()] * 3
    assert other.compiled_with is None and unet.compiled_with is None


def test_compiled_code_may_specialise_for_many_shapes_on_any_thread() -> None:
    """Jobs meet new batch sizes on the worker's job threads: the raised recompile limit must hold
    there, not only on the thread that compiled (else a block silently runs eagerly)."""
    from torch._dynamo.utils import counters

    compiled = torch.compile(lambda x: x * 2 + 1, backend="eager", **fast_unet.compile_options())
    shapes = range(1, fast_unet.RECOMPILE_LIMIT // 4 + 2)  # past torch's default limit (8)
    before = counters["stats"]["unique_graphs"]
    thread = threading.Thread(target=lambda: [compiled(torch.ones(n)) for n in shapes])
    thread.start()
    thread.join()
    assert counters["stats"]["unique_graphs"] - before == len(shapes)


def test_graphs_mode_compiles_nothing() -> None:
    block = BasicTransformerBlock()
    unet = _RecordingModule(block)
    call = fast_unet.accelerate_unet(unet, "graphs", fp8=False)
    assert isinstance(call, fast_unet.GraphedUNet)
    assert block.compiled_with is None and unet.compiled_with is None


def test_off_mode_and_fp8_off_cuda(
    tiny_engine_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    unet = _RecordingModule()
    assert fast_unet.accelerate_unet(unet, "off", fp8=False) is unet
    assert fast_unet.fp8_supported(torch.device("cpu")) == "FP8 needs a CUDA GPU"
    with caplog.at_level("WARNING"):
        models = load_models(EngineSettings(**{**tiny_engine_settings, "fp8": True}))
    assert "OUTPAINT_FP8 ignored: FP8 needs a CUDA GPU" in caplog.text
    assert models.unet_call is None
