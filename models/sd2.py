"""Stable Diffusion 2.x family: OpenCLIP ViT-H/14 text tower (penultimate layer), linear transformer projections,
64-channel heads; the full-size configuration and a tiny random one for tests."""
from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig

SD2_UNET = UNetConfig(num_heads=-1, num_head_channels=64, context_dim=1024, use_linear_proj=True, upcast_attention=True)
# 23 of the tower's 24 blocks: SD 2 takes the penultimate output (models/openclip.py)
SD2_TEXT = TextConfig(kind="openclip", width=1024, layers=23, heads=16, mlp_width=4096, activation="gelu", pad_token_id=0)

SD2 = ModelConfig(family="sd2", unet=SD2_UNET, vae=VAEConfig(), text=SD2_TEXT, prediction="v")

TINY_SD2 = ModelConfig(
    family="sd2",
    unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 2, 2), num_heads=-1, num_head_channels=64, context_dim=128,
                    use_linear_proj=True, upcast_attention=True),
    vae=VAEConfig(base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1),
    text=TextConfig(kind="openclip", width=128, layers=2, heads=2, mlp_width=512, activation="gelu", pad_token_id=0),
    prediction="v",
)
