"""Detect the model family and its sizes from checkpoint tensors (ComfyUI `detect_unet_config` style).

Sizes (widths, levels, depths) come from tensor shapes; what shapes cannot tell (head count, latent scaling
factor, prediction type) comes from the matched family in `FAMILIES`. Input is a state dict in the original
CompVis layout with training buffers and EMA weights already removed.
"""
import re
from dataclasses import dataclass

import torch

from models.checkpoint import CheckpointError
from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."
OPENCLIP = "cond_stage_model.model."
SDXL_MARKERS = ("conditioner.embedders.", UNET + "label_emb.")
PREDICTIONS = ("epsilon", "v")


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    text_activation: str
    num_heads: int
    scaling_factor: float
    prediction: str


FAMILIES = {
    "sd1": Family("sd1", "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder, conv projections)", "quick_gelu", 8, 0.18215, "epsilon"),
}


def _unsupported(path: str, found: str) -> CheckpointError:
    supported = "; ".join(f.description for f in FAMILIES.values())
    return CheckpointError(f"{path}: found {found}, which is not supported. Supported: {supported}.")


def _indices(sd: dict, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := regex.match(k))})


def _check_parts(sd: dict, path: str) -> None:
    if any(k.startswith(SDXL_MARKERS) for k in sd):
        raise _unsupported(path, "an SDXL checkpoint (conditioner / label_emb keys)")
    if any(k.startswith(OPENCLIP) for k in sd):
        raise _unsupported(path, "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, cond_stage_model.model.*)")
    missing = [name for prefix, name in ((UNET, "UNet"), (VAE, "VAE"), (CLIP, "CLIP text encoder"))
               if not any(k.startswith(prefix) for k in sd)]
    if missing:
        parts = sorted({k.split(".")[0] for k in sd})[:8]
        raise CheckpointError(
            f"{path}: not a complete Stable Diffusion checkpoint: no {', '.join(missing)} weights "
            f"(expected keys under {UNET}, {VAE}, {CLIP}; found top-level names {parts})"
        )


def detect_unet(sd: dict, family: Family, path: str) -> UNetConfig:
    conv_in = sd[UNET + "input_blocks.0.0.weight"]
    if conv_in.shape[1] != 4:
        raise _unsupported(path, f"a UNet with {conv_in.shape[1]} input channels (inpainting/editing models have 9 or 8)")
    levels = len(_indices(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    blocks = _indices(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    res_blocks = len(blocks) // levels - 1  # conv_in + levels * res_blocks + (levels - 1) downsamples
    mc = conv_in.shape[0]
    first = [1 + level * (res_blocks + 1) for level in range(levels)]
    mult = tuple(sd[UNET + f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc for i in first)
    attention = tuple(level for level, i in enumerate(first) if UNET + f"input_blocks.{i}.1.proj_in.weight" in sd)
    proj_in = sd[UNET + "middle_block.1.proj_in.weight"]
    if proj_in.ndim == 2:
        raise _unsupported(path, "a UNet with linear transformer projections (Stable Diffusion 2.x)")
    depth = len(_indices(sd, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    return UNetConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[UNET + "out.2.weight"].shape[0],
        model_channels=mc,
        channel_mult=mult,
        num_res_blocks=res_blocks,
        attention_levels=attention,
        num_heads=family.num_heads,
        transformer_depth=depth,
        context_dim=sd[UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
    )


def detect_vae(sd: dict, family: Family) -> VAEConfig:
    conv_in = sd[VAE + "encoder.conv_in.weight"]
    base = conv_in.shape[0]
    levels = _indices(sd, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    mult = tuple(sd[VAE + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // base for i in levels)
    return VAEConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[VAE + "decoder.conv_out.weight"].shape[0],
        base_channels=base,
        channel_mult=mult,
        num_res_blocks=len(_indices(sd, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\.")),
        z_channels=sd[VAE + "decoder.conv_in.weight"].shape[1],
        embed_dim=sd[VAE + "post_quant_conv.weight"].shape[1],
        scaling_factor=family.scaling_factor,
    )


def detect_text(sd: dict, family: Family) -> TextConfig:
    tokens = sd[CLIP + "embeddings.token_embedding.weight"]
    width = tokens.shape[1]
    return TextConfig(
        vocab_size=tokens.shape[0],
        max_length=sd[CLIP + "embeddings.position_embedding.weight"].shape[0],
        width=width,
        layers=len(_indices(sd, re.escape(CLIP) + r"encoder\.layers\.(\d+)\.")),
        heads=max(1, width // 64),  # CLIP text towers use 64-wide heads
        mlp_ratio=sd[CLIP + "encoder.layers.0.mlp.fc1.weight"].shape[0] // width,
        activation=family.text_activation,
    )


def detect_config(sd: dict[str, torch.Tensor], path: str = "<state dict>", prediction: str | None = None) -> ModelConfig:
    """Match the family, derive every size from shapes; `prediction` overrides the family's default."""
    if prediction is not None and prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not allowed; use None (detect), 'epsilon' or 'v'")
    _check_parts(sd, path)
    family = FAMILIES["sd1"]
    try:
        unet, vae, text = detect_unet(sd, family, path), detect_vae(sd, family), detect_text(sd, family)
    except KeyError as missing:
        raise CheckpointError(f"{path}: incomplete Stable Diffusion checkpoint, missing key {missing.args[0]}") from None
    return ModelConfig(family.name, unet, vae, text, prediction or family.prediction)
