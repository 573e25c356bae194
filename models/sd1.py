"""Stable Diffusion 1.x family: the full-size configuration and the tiny random one used by tests and `--model tiny`."""
from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig

SD1 = ModelConfig(family="sd1", unet=UNetConfig(), vae=VAEConfig(), text=TextConfig())

# Same topology at small widths: every code path of SD1 (4 levels, 2 res blocks, attention at 3 levels,
# 8 heads, conv projections, quick-GELU CLIP), small enough to run a whole pipeline in seconds on a CPU.
TINY_SD1 = ModelConfig(
    family="sd1",
    unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), context_dim=128),
    vae=VAEConfig(base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1),
    text=TextConfig(width=128, layers=2, heads=2, mlp_width=512),
)
