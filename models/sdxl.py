"""Stable Diffusion XL base: two text towers (CLIP ViT-L/14 and OpenCLIP ViT-bigG/14, context = both concatenated)
and a UNet whose time embedding also takes the `label_emb` of a vector: the pooled OpenCLIP embedding followed by
sinusoidal features of six micro-conditioning numbers (original size, crop top-left, target size).

Attributes follow Stability's `sgm` names (`conditioner.embedders.0.transformer.*`, `conditioner.embedders.1.model.*`)
so an original single file loads with no renaming. The CLIP tower's output is its penultimate hidden state without
the final norm, so its last layer and final norm never run and are not built (`drop_unused_sdxl_text`).
"""
import re

import torch
from torch import nn

from models import keys
from models.clip import CLIPTextEncoder
from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig
from models.openclip import OpenCLIPPooledTextEncoder
from models.unet import timestep_embedding

UNUSED_OPENCLIP = ("logit_scale", "attn_mask")
SCALING_FACTOR = 0.13025

SDXL_UNET = UNetConfig(channel_mult=(1, 2, 4), attention_levels=(1, 2), num_heads=-1, num_head_channels=64,
                       transformer_depth=(0, 2, 10), context_dim=2048, use_linear_proj=True, adm_in_channels=2816)
SDXL_VAE = VAEConfig(scaling_factor=SCALING_FACTOR, force_upcast=True)
# 11 of the CLIP tower's 12 layers (penultimate hidden state); the whole OpenCLIP tower (its last block feeds the pool)
SDXL_TEXT = TextConfig(final_norm=False, layers=11)
SDXL_TEXT2 = TextConfig(kind="openclip", width=1280, layers=32, heads=20, mlp_width=5120, activation="gelu",
                        pad_token_id=0, projection_dim=1280)
SDXL = ModelConfig(family="sdxl", unet=SDXL_UNET, vae=SDXL_VAE, text=SDXL_TEXT, text2=SDXL_TEXT2)

# The real topology at small widths: three levels, no attention at the first, unequal depths (1, then 2; middle 2),
# towers of different widths whose pooled width and 6 x 32 micro-conditioning features make label_emb's input.
TINY_SDXL = ModelConfig(
    family="sdxl",
    unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 3), attention_levels=(1, 2), num_heads=-1,
                    num_head_channels=64, transformer_depth=(0, 1, 2), context_dim=192, use_linear_proj=True,
                    adm_in_channels=128 + 6 * 32),
    vae=VAEConfig(base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, scaling_factor=SCALING_FACTOR,
                  force_upcast=True),
    text=TextConfig(width=64, layers=2, heads=1, mlp_width=256, final_norm=False),
    text2=TextConfig(kind="openclip", width=128, layers=2, heads=2, mlp_width=512, activation="gelu", pad_token_id=0,
                     projection_dim=128),
)


class Conditioner(nn.Module):
    """Token ids of both tokenizers -> (context [B, 77, width + width2], pooled [B, projection_dim])."""

    def __init__(self, text: TextConfig, text2: TextConfig):
        super().__init__()
        self.embedders = nn.ModuleList([CLIPTextEncoder(text), OpenCLIPPooledTextEncoder(text2)])

    def forward(self, ids: torch.Tensor, ids2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context2, pooled = self.embedders[1](ids2)
        return torch.cat([self.embedders[0](ids), context2], dim=-1), pooled


def vector_conditioning(pooled: torch.Tensor, time_ids: torch.Tensor, adm_in_channels: int) -> torch.Tensor:
    """The UNet's `y` [B, adm_in_channels]: pooled [B, P] ; sinusoidal features of each of the time ids [B, 6]."""
    # sgm ConcatTimestepEmbedderND (diffusers `add_time_proj`): cos half first, float32, flattened per row
    width = (adm_in_channels - pooled.shape[-1]) // time_ids.shape[-1]
    features = timestep_embedding(time_ids.flatten(), width).reshape(time_ids.shape[0], -1)
    return torch.cat([pooled, features.to(pooled.dtype)], dim=-1)


def drop_unused_sdxl_text(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove what SDXL never runs: the CLIP tower's last layer and final norm (it takes the penultimate hidden
    state) and OpenCLIP's logit scale and mask buffer. A full CLIP tower is recognised by its final norm; a tower
    saved from this model already ends one layer early. Other files pass unchanged."""
    layers = [int(m.group(1)) for k in sd if (m := re.match(re.escape(keys.SDXL_CLIP) + r"encoder\.layers\.(\d+)\.", k))]
    if not layers or keys.SDXL_CLIP + "final_layer_norm.weight" not in sd:
        return {k: v for k, v in sd.items() if k.removeprefix(keys.SDXL_OPENCLIP) not in UNUSED_OPENCLIP}
    unused = (keys.SDXL_CLIP + f"encoder.layers.{max(layers)}.", keys.SDXL_CLIP + "final_layer_norm.",
              *(keys.SDXL_OPENCLIP + name for name in UNUSED_OPENCLIP))
    return {k: v for k, v in sd.items() if not k.startswith(unused)}
