"""Tiny random SDXL + IP-Adapter Plus (+ captioner VLM, + safety classifier) models, written to disk
in the real layouts.

The engine tests load these back through the real loaders (``from_pretrained``,
``load_ip_adapter(..., local_files_only=True)``), so the whole loading path runs offline with
models small enough for a CPU: a UNet of widths (32, 64), a VAE with the real 8× latent scale, two
32-wide CLIP text encoders and a 32-wide CLIP vision encoder at the real 224-px input size; a
tiny LLaVA for the optional captioner, and a random Idefics3 (SmolVLM) at a tiny size or at
SmolVLM-256M's shapes (:func:`save_smolvlm`); and a tiny ViT image classifier with fixed answers
for the content check.

Sizes that must agree (see DESIGN.md, appendix):

- cross-attention width 64 = the two text encoders' hidden sizes (32 + 32);
- ``projection_class_embeddings_input_dim`` 80 = 6 time ids × 8 + the pooled width 32;
- the resampler's input width = the image encoder's hidden size, its heads = ``to_q`` rows ÷ 64.

Run ``python -m tests.tiny_models DIR`` to write a set by hand.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

IMAGE_TOKENS = 16  # tokens per image, as in the real IP-Adapter Plus
RESAMPLER_DEPTH = 4  # the loader always builds four blocks
IP_ADAPTER_WEIGHT = "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors"
IMAGE_ENCODER_FOLDER = "models/image_encoder"


@dataclass(frozen=True)
class Sizes:
    """The shapes of one model set: :data:`TINY` for the tests, :data:`SDXL` for GPU benchmarks."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text: tuple[dict[str, Any], dict[str, Any]]  # CLIPTextConfig fields of the two encoders
    image_encoder: dict[str, Any]  # CLIPVisionConfig fields
    resampler_width: int  # heads = width ÷ 64 (the loader infers heads that way)
    vocab_size: int | None = None  # text embedding rows; None = the tokenizer's size

    @property
    def cross_attention(self) -> int:
        return self.unet["cross_attention_dim"]


_UNET_COMMON: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
}
_VAE_COMMON: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,  # four blocks: the real 8× latent scale
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

TINY = Sizes(
    unet={
        **_UNET_COMMON,
        "block_out_channels": (32, 64),
        "sample_size": 8,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "transformer_layers_per_block": (1, 2),
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 6 * 8 + 32,  # six time ids + pooled width
        "cross_attention_dim": 64,  # the two text encoders' widths, 32 + 32
    },
    vae={
        **_VAE_COMMON,
        "block_out_channels": (8, 8, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 64,
    },
    text=tuple(  # type: ignore[arg-type]
        {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": 32,
            "hidden_act": "gelu",
        }
        for _ in range(2)
    ),
    image_encoder={
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    },
    resampler_width=64,  # one head of 64
)

# The shapes of SDXL base 1.0 and IP-Adapter Plus SDXL ViT-H (random weights: nothing to download).
SDXL = Sizes(
    unet={
        **_UNET_COMMON,
        "block_out_channels": (320, 640, 1280),
        "sample_size": 128,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 6 * 256 + 1280,
        "cross_attention_dim": 2048,
    },
    vae={
        **_VAE_COMMON,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "sample_size": 1024,
    },
    text=(
        {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        {
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 20,
            "projection_dim": 1280,
            "hidden_act": "gelu",
        },
    ),
    image_encoder={
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "projection_dim": 1024,
        "hidden_act": "gelu",
    },
    resampler_width=1280,
    vocab_size=49408,
)

IMAGE_ENCODER_WIDTH = TINY.image_encoder["hidden_size"]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2 / CLIP style)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with a couple of merges; ``<|endoftext|>`` has the highest id."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = [("a", "n"), ("t", "h")]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_config(tokenizer: CLIPTokenizer, sizes: Sizes, index: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        **sizes.text[index],
        vocab_size=sizes.vocab_size or len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_pipeline(seed: int = 0, sizes: Sizes = TINY) -> StableDiffusionXLPipeline:
    """All SDXL components with random weights (deterministic under ``seed``)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sizes.unet)
    vae = AutoencoderKL(**sizes.vae)
    # The SDXL base scheduler config; the engine swaps in DPM++ 2M Karras from it.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, sizes, 0))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, sizes, 1))
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


def save_sdxl(directory: Path, seed: int = 0, sizes: Sizes = TINY, dtype: torch.dtype | None = None) -> Path:
    """Write an SDXL model of random weights in the diffusers folder layout."""
    pipeline = build_pipeline(seed, sizes)
    if dtype is not None:
        pipeline.to(dtype=dtype)
    pipeline.save_pretrained(directory)
    return directory


def _cross_attention_widths(unet: UNet2DConditionModel) -> list[int]:
    """The hidden width of every cross-attention layer, in ``attn_processors`` order."""
    widths = []
    channels = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            widths.append(channels[-1])
        elif name.startswith("up_blocks"):
            widths.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            widths.append(channels[int(name[len("down_blocks.")])])
    return widths


def _ip_adapter_state(unet: UNet2DConditionModel, sizes: Sizes) -> dict[str, torch.Tensor]:
    """An IP-Adapter Plus state dict with the original (h94) key names."""
    w, cross = sizes.resampler_width, sizes.cross_attention
    state: dict[str, torch.Tensor] = {
        "image_proj.latents": torch.randn(1, IMAGE_TOKENS, w) / w**0.5,
        "image_proj.proj_in.weight": torch.randn(w, sizes.image_encoder["hidden_size"]) * 0.1,
        "image_proj.proj_in.bias": torch.zeros(w),
        "image_proj.proj_out.weight": torch.randn(cross, w) * 0.1,
        "image_proj.proj_out.bias": torch.zeros(cross),
        "image_proj.norm_out.weight": torch.ones(cross),
        "image_proj.norm_out.bias": torch.zeros(cross),
    }
    for i in range(RESAMPLER_DEPTH):
        p = f"image_proj.layers.{i}"
        for norm in ("0.norm1", "0.norm2", "1.0"):
            state[f"{p}.{norm}.weight"] = torch.ones(w)
            state[f"{p}.{norm}.bias"] = torch.zeros(w)
        state[f"{p}.0.to_q.weight"] = torch.randn(w, w) / w**0.5
        state[f"{p}.0.to_kv.weight"] = torch.randn(2 * w, w) / w**0.5
        state[f"{p}.0.to_out.weight"] = torch.randn(w, w) / w**0.5
        state[f"{p}.1.1.weight"] = torch.randn(4 * w, w) / w**0.5
        state[f"{p}.1.3.weight"] = torch.randn(w, 4 * w) / (4 * w) ** 0.5
    for n, width in enumerate(_cross_attention_widths(unet)):
        key = 2 * n + 1
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(width, cross) / cross**0.5
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(width, cross) / cross**0.5
    return state


def save_ip_adapter(
    directory: Path, sdxl_dir: Path, seed: int = 0, sizes: Sizes = TINY, dtype: torch.dtype | None = None
) -> Path:
    """Write an IP-Adapter Plus SDXL repo in the h94 layout, sized for the model in ``sdxl_dir``."""
    torch.manual_seed(seed)
    with torch.device("meta"):  # only the layer names and widths are needed
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sdxl_dir, subfolder="unet"))
    state = _ip_adapter_state(unet, sizes)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    weight = directory / IP_ADAPTER_WEIGHT
    weight.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(weight))
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(**sizes.image_encoder, image_size=224, patch_size=14)
    )
    if dtype is not None:
        encoder.to(dtype)
    encoder.save_pretrained(directory / IMAGE_ENCODER_FOLDER)
    return directory


_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def _byte_level_tokenizer(*special: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no merges) with ``<s>``, ``</s>``, ``<pad>`` and ``special`` tokens."""
    byte_level = Tokenizer(BPE(vocab={c: i for i, c in enumerate(_byte_alphabet())}, merges=[]))
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(special)})
    return tokenizer


def save_captioner(directory: Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA (CLIP vision + Llama) with its processor and chat template."""
    torch.manual_seed(seed)
    tokenizer = _byte_level_tokenizer("<image>")
    side, patch = 28, 14
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tokenizer,
        chat_template=_CHAT_TEMPLATE,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class VLMSizes:
    """The shapes of an Idefics3 (SmolVLM) captioner: :data:`TINY_VLM` for tests, :data:`SMOLVLM_256M`
    for GPU benchmarks. The processor scales a picture's long side to ``longest_edge``, cuts it into
    ``vision["image_size"]`` tiles and adds one global tile; each tile is (side ÷ patch)² ÷ scale²
    image tokens."""

    text: dict[str, Any]  # LlamaConfig fields
    vision: dict[str, Any]  # Idefics3VisionConfig fields
    scale_factor: int
    longest_edge: int
    vocab_size: int = 0  # embedding rows; 0 = the (byte-level) test tokenizer's size

    @property
    def tokens_per_tile(self) -> int:
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2 // self.scale_factor**2


TINY_VLM = VLMSizes(
    text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2},
    vision={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8},
    scale_factor=2,
    longest_edge=64,
)  # fmt: skip
SMOLVLM_256M = VLMSizes(  # HuggingFaceTB/SmolVLM-256M-Instruct: SmolLM2-135M + SigLIP base patch16/512
    text={"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
          "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192, "rope_theta": 100000.0,
          "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
    vision={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "image_size": 512, "patch_size": 16},
    scale_factor=4,
    longest_edge=2048,
    vocab_size=49280,
)  # fmt: skip

_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def save_smolvlm(
    directory: Path, seed: int = 0, sizes: VLMSizes = TINY_VLM, dtype: torch.dtype | None = None
) -> Path:
    """Write a random Idefics3 model (SmolVLM's architecture) with its processor and chat template.

    Loads back with ``AutoModelForImageTextToText`` / ``AutoProcessor``. Random weights rarely say
    anything sensible, and rarely stop early: a caption runs to its token limit (the worst case).
    """
    torch.manual_seed(seed)
    tiles = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer = _byte_level_tokenizer(
        "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", *tiles
    )
    side = sizes.vision["image_size"]
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": sizes.longest_edge}, max_image_size={"longest_edge": side}
        ),
        tokenizer=tokenizer,
        image_seq_len=sizes.tokens_per_tile,
        chat_template=_IDEFICS3_TEMPLATE,
    )
    named = {"bos": "<s>", "eos": "<end_of_utterance>", "pad": "<pad>", "image": "<image>"}
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in named.items()}
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**sizes.vision),
        text_config=LlamaConfig(
            vocab_size=max(sizes.vocab_size, len(tokenizer)),
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["pad"],
            **sizes.text,
        ),
        scale_factor=sizes.scale_factor,
        image_token_id=ids["image"],
        pad_token_id=ids["pad"],
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    model.to(dtype).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_image_classifier(directory: Path, scores: dict[str, float], seed: int = 0) -> Path:
    """Write a tiny random ViT image classifier (with its processor) whose labels are the keys of
    ``scores`` and whose softmax gives those scores for any image: the classification head's weights
    are zero and its biases the scores' logarithms."""
    torch.manual_seed(seed)
    labels = list(scores)
    side = 32
    config = ViTConfig(
        image_size=side,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.log(torch.tensor([scores[label] for label in labels])))
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(directory)
    return directory


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "tiny-models")
    sdxl = save_sdxl(root / "sdxl")
    save_ip_adapter(root / "ip-adapter", sdxl)
    save_captioner(root / "captioner")
    paths = {"model": sdxl, "ip_adapter": root / "ip-adapter", "captioner": root / "captioner"}
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
