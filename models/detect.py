"""Detect the model family and its sizes from checkpoint tensors (ComfyUI `detect_unet_config` style).

Sizes (widths, levels, depths) come from tensor shapes; what shapes cannot tell (attention heads, latent scaling
factor, default prediction type) comes from the matched family in `FAMILIES`. Families are told apart by their text
encoder (OpenAI CLIP under `cond_stage_model.transformer.` for SD 1, OpenCLIP under `cond_stage_model.model.` for
SD 2) and checked against the UNet's transformer projections (1x1 conv for SD 1, linear for SD 2). Input is a state
dict in the original CompVis layout with training buffers, EMA weights and unused OpenCLIP tensors removed.

Families sharing a text encoder are told apart by their UNet width: the toy model (`models/toy.py`) is an SD 1
network whose UNet is 64 channels wide; any other width with a CLIP text encoder is SD 1.

Prediction type, in order: the caller's override; a `v_pred` marker key (written by tools that save v-models);
a diffusers folder's scheduler config (handled by the loader); the family default (SD 1: epsilon; SD 2: v, as
diffusers assumes for SD 2 single files — the 512-pixel SD 2 base models need prediction="epsilon").
"""
import re
from dataclasses import dataclass

import torch

from models.checkpoint import CheckpointError
from models.config import ModelConfig, TextConfig, UNetConfig, VAEConfig
from models.keys import CLIP, OPENCLIP, SDXL_CONDITIONER, SDXL_LABEL_EMBEDDING, UNET, VAE
from models.toy import TOY_HEADS, TOY_SCALING_FACTOR, TOY_UNET_CHANNELS

SDXL_MARKERS = (SDXL_CONDITIONER, SDXL_LABEL_EMBEDDING)
V_MARKER = "v_pred"


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    text_prefix: str
    text_kind: str
    text_activation: str
    pad_token_id: int | None
    num_heads: int
    num_head_channels: int
    linear_proj: bool
    upcast_attention: bool
    scaling_factor: float
    prediction: str
    unet_channels: int | None = None  # claims only files whose UNet has this width (None: any width)


FAMILIES = {
    "sd1-toy": Family("sd1-toy", "the toy SD 1 model trained on synthetic shapes (models/toy.py; UNet width 64)", CLIP,
                      "clip", "quick_gelu", None, TOY_HEADS, -1, False, False, TOY_SCALING_FACTOR, "epsilon",
                      unet_channels=TOY_UNET_CHANNELS),
    "sd1": Family("sd1", "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder, conv projections)", CLIP, "clip",
                  "quick_gelu", None, 8, -1, False, False, 0.18215, "epsilon"),
    "sd2": Family("sd2", "Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder, linear projections)", OPENCLIP,
                  "openclip", "gelu", 0, -1, 64, True, True, 0.18215, "v"),
}


@dataclass(frozen=True)
class Detection:
    config: ModelConfig
    prediction_reason: str


def _unsupported(path: str, found: str) -> CheckpointError:
    supported = "; ".join(f.description for f in FAMILIES.values())
    return CheckpointError(f"{path}: found {found}, which is not supported. Supported: {supported}.")


def _indices(sd: dict, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := regex.match(k))})


def match_family(sd: dict, path: str) -> Family:
    if any(k.startswith(SDXL_MARKERS) for k in sd):
        raise _unsupported(path, "an SDXL checkpoint (conditioner / label_emb keys)")
    family = pick_family([f for f in FAMILIES.values() if any(k.startswith(f.text_prefix) for k in sd)], sd)
    missing = [name for prefix, name in ((UNET, "UNet"), (VAE, "VAE")) if not any(k.startswith(prefix) for k in sd)]
    missing += [] if family else ["text encoder"]
    if missing:
        parts = sorted({k.split(".")[0] for k in sd})[:8]
        raise CheckpointError(
            f"{path}: not a complete Stable Diffusion checkpoint: no {', '.join(missing)} weights (expected keys under "
            f"{UNET}, {VAE} and {CLIP} or {OPENCLIP}; found top-level names {parts})"
        )
    return family


def pick_family(candidates: list[Family], sd: dict) -> Family | None:
    """The candidate claiming this UNet's width, else the one that takes any width."""
    conv_in = sd.get(UNET + "input_blocks.0.0.weight")
    width = None if conv_in is None else conv_in.shape[0]
    claiming = [f for f in candidates if f.unet_channels == width]
    return (claiming or [f for f in candidates if f.unet_channels is None] or [None])[0]


def detect_unet(sd: dict, family: Family, path: str) -> UNetConfig:
    conv_in = sd[UNET + "input_blocks.0.0.weight"]
    if conv_in.shape[1] != 4:
        raise _unsupported(path, f"a UNet with {conv_in.shape[1]} input channels (inpainting/editing models have 9 or 8)")
    linear = sd[UNET + "middle_block.1.proj_in.weight"].ndim == 2
    if linear != family.linear_proj:
        kind = "linear" if linear else "1x1-conv"
        raise _unsupported(path, f"a {family.name} text encoder with {kind} transformer projections in the UNet")
    levels = len(_indices(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
    blocks = _indices(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    res_blocks = len(blocks) // levels - 1  # conv_in + levels * res_blocks + (levels - 1) downsamples
    mc = conv_in.shape[0]
    first = [1 + level * (res_blocks + 1) for level in range(levels)]
    return UNetConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[UNET + "out.2.weight"].shape[0],
        model_channels=mc,
        channel_mult=tuple(sd[UNET + f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc for i in first),
        num_res_blocks=res_blocks,
        attention_levels=tuple(level for level, i in enumerate(first) if UNET + f"input_blocks.{i}.1.proj_in.weight" in sd),
        num_heads=family.num_heads,
        num_head_channels=family.num_head_channels,
        transformer_depth=len(_indices(sd, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\.")),
        context_dim=sd[UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        use_linear_proj=linear,
        upcast_attention=family.upcast_attention,
    )


def detect_vae(sd: dict, family: Family) -> VAEConfig:
    conv_in = sd[VAE + "encoder.conv_in.weight"]
    base = conv_in.shape[0]
    levels = _indices(sd, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    return VAEConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[VAE + "decoder.conv_out.weight"].shape[0],
        base_channels=base,
        channel_mult=tuple(sd[VAE + f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // base for i in levels),
        num_res_blocks=len(_indices(sd, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\.")),
        z_channels=sd[VAE + "decoder.conv_in.weight"].shape[1],
        embed_dim=sd[VAE + "post_quant_conv.weight"].shape[1],
        scaling_factor=family.scaling_factor,
    )


def detect_text(sd: dict, family: Family) -> TextConfig:
    p = family.text_prefix
    if family.text_kind == "openclip":
        tokens, positions = sd[p + "token_embedding.weight"], sd[p + "positional_embedding"]
        layers = _indices(sd, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
        fc1 = sd[p + "transformer.resblocks.0.mlp.c_fc.weight"]
    else:
        tokens, positions = sd[p + "embeddings.token_embedding.weight"], sd[p + "embeddings.position_embedding.weight"]
        layers = _indices(sd, re.escape(p) + r"encoder\.layers\.(\d+)\.")
        fc1 = sd[p + "encoder.layers.0.mlp.fc1.weight"]
    width = tokens.shape[1]
    return TextConfig(
        kind=family.text_kind,
        vocab_size=tokens.shape[0],
        max_length=positions.shape[0],
        width=width,
        layers=len(layers),
        heads=max(1, width // 64),  # CLIP and OpenCLIP text towers use 64-wide heads
        mlp_width=fc1.shape[0],
        activation=family.text_activation,
        pad_token_id=family.pad_token_id,
    )


def detect_prediction(sd: dict, family: Family, override: str | None, hint: str | None) -> tuple[str, str]:
    """(prediction, reason) by the rule in the module docstring; `hint` comes from a diffusers scheduler config."""
    if override is not None:
        return override, "given by the caller"
    if V_MARKER in sd:
        return "v", f"the file has a '{V_MARKER}' marker key"
    if hint is not None:
        return hint, "the diffusers folder's scheduler config says so"
    rule = " (512-pixel SD 2 base models need prediction='epsilon')" if family.prediction == "v" else ""
    return family.prediction, f"the {family.name} default{rule}"


def detect(sd: dict[str, torch.Tensor], path: str = "<state dict>", prediction: str | None = None,
           hint: str | None = None) -> Detection:
    """Match the family, derive every size from shapes and decide the prediction type."""
    family = match_family(sd, path)
    try:
        unet, vae, text = detect_unet(sd, family, path), detect_vae(sd, family), detect_text(sd, family)
    except KeyError as missing:
        raise CheckpointError(f"{path}: incomplete {family.name} checkpoint, missing key {missing.args[0]}") from None
    chosen, reason = detect_prediction(sd, family, prediction, hint)
    return Detection(ModelConfig(family.name, unet, vae, text, chosen), reason)


def detect_config(sd: dict[str, torch.Tensor], path: str = "<state dict>", prediction: str | None = None) -> ModelConfig:
    return detect(sd, path, prediction).config
