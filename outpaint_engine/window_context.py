"""Static cross-attention keys and values: the UNet's projections of the prompt and the crops,
computed once per window instead of at every denoising step.

Each cross-attention layer projects the text embeddings (and the IP-Adapter's image tokens, which
its resampler makes from the crops' embeddings) into keys and values. Within a window they never
change, yet the stock UNet recomputes them at each of its 25 calls: about 280 small matrix
products per call on SDXL, plus the resampler. :func:`install` moves that work out of the UNet.
Every such projection becomes a column selection (:class:`ContextColumns`) from a packed tensor
that holds all layers' keys and values side by side, and the resampler becomes a pass-through;
:meth:`WindowContext.pack` computes the packed tensors once per window with the original layers.
The UNet then takes the packed text as ``encoder_hidden_states`` and the packed image tokens as
``image_embeds``. The attention processors stay diffusers' own, so the arithmetic (and, on the
CPU, every bit of the result) is the stock UNet's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

log = logging.getLogger(__name__)


class ContextColumns(torch.nn.Module):
    """Stands in for a key or value projection: selects its columns of the packed context.

    The columns are a buffer, not a Python constant, so one compiled block serves every layer.
    """

    def __init__(self, columns: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("columns", columns, persistent=False)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return packed.index_select(-1, self.columns)


class PassThrough(torch.nn.Module):
    """Stands in for the IP-Adapter's resampler: the image tokens come already packed. It keeps the
    resampler's layers (diffusers' ``prepare_ip_adapter_image_embeds`` reads them)."""

    def __init__(self, projection: torch.nn.Module) -> None:
        super().__init__()
        self.image_projection_layers = projection.image_projection_layers

    def forward(self, image_embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        return image_embeds


@dataclass
class WindowContext:
    """The projections taken out of the UNet, in the packed columns' order."""

    text_layers: list[torch.nn.Module]  # each cross-attention's to_k, to_v
    image_layers: list[torch.nn.Module]  # each cross-attention's IP-Adapter to_k_ip, to_v_ip
    image_projection: torch.nn.Module | None  # the IP-Adapter's resampler

    def pack(
        self, text: torch.Tensor, image_embeds: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The UNet's ``encoder_hidden_states`` and ``image_embeds`` for a window: every layer's
        keys and values of the text (batch, 77, columns) and of the image tokens (batch, tokens,
        columns), from the prompt embeddings and the image encoder's states."""
        packed_text = torch.cat([layer(text) for layer in self.text_layers], dim=-1)
        if image_embeds is None or self.image_projection is None:
            return packed_text, None
        (tokens,) = self.image_projection(image_embeds)  # (batch, crops, tokens per crop, width)
        packed_image = torch.cat([layer(tokens).flatten(1, 2) for layer in self.image_layers], dim=-1)
        return packed_text, [packed_image]


def install(unet: torch.nn.Module) -> WindowContext | None:
    """Take the context projections out of ``unet`` (in place); None, leaving it as it is, for a
    UNet whose cross-attention is not diffusers' plain or single-IP-Adapter processor."""
    crosses = [m for m in unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    if not crosses:
        return None
    with_ip = isinstance(crosses[0].processor, IPAdapterAttnProcessor2_0)
    expected = IPAdapterAttnProcessor2_0 if with_ip else AttnProcessor2_0
    for attn in crosses:
        processor = attn.processor
        if type(processor) is not expected or attn.norm_cross is not None:
            log.info("static cross-attention context not used: %s", type(processor).__name__)
            return None
        if with_ip and len(processor.to_k_ip) != 1:
            log.info("static cross-attention context not used: %d IP-Adapters", len(processor.to_k_ip))
            return None
    text_layers: list[torch.nn.Module] = []
    image_layers: list[torch.nn.Module] = []
    start = 0
    for attn in crosses:
        width = attn.to_k.out_features
        device = attn.to_k.weight.device
        keys = ContextColumns(torch.arange(start, start + width, device=device))
        values = ContextColumns(torch.arange(start + width, start + 2 * width, device=device))
        text_layers += [attn.to_k, attn.to_v]
        attn.to_k, attn.to_v = keys, values
        if with_ip:
            processor = attn.processor
            image_layers += [processor.to_k_ip[0], processor.to_v_ip[0]]
            processor.to_k_ip[0], processor.to_v_ip[0] = keys, values
        start += 2 * width
    projection = None
    if with_ip:
        projection = unet.encoder_hid_proj
        unet.encoder_hid_proj = PassThrough(projection)
    return WindowContext(text_layers, image_layers, projection)
