"""The toy SD 1 model trained here on synthetic shape scenes (scripts/train_toy.py), shipped as package data.

Same code and key layout as SD 1 at small widths: a KL VAE with factor 4 (64x64 pictures -> 16x16x4 latents, as
LDM's kl-f4; the blood drops of sld/toy/shapes.py are 3 to 7 px wide), a two-level UNet with attention on its 8x8
level and a two-layer CLIP text encoder with the real tokenizer. Detection tells it from SD 1 by its UNet
width (`models.detect.FAMILIES["sd1-toy"]`), which also holds what shapes cannot tell: its heads and latent scale.
"""
from pathlib import Path

from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig

TOY_WEIGHTS = Path(__file__).parent / "data" / "toy.safetensors"
TOY_UNET_CHANNELS = 64  # the shape detection keys on
TOY_HEADS = 4
TOY_SIZE = 64  # the side of its pictures
# 1 / std of the trained VAE's latent means over the training scenes, printed by scripts/train_toy.py and stored
# in the shipped file's metadata (tests/test_toy.py checks the two agree).
TOY_SCALING_FACTOR = 0.57761

TOY_SD1 = ModelConfig(
    family="sd1-toy",
    unet=UNetConfig(model_channels=TOY_UNET_CHANNELS, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                    num_heads=TOY_HEADS, context_dim=128),
    vae=VAEConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, scaling_factor=TOY_SCALING_FACTOR),
    text=TextConfig(width=128, layers=2, heads=2, mlp_width=512),
)
