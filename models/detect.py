"""Detect the model family and its sizes from checkpoint tensors (ComfyUI `detect_unet_config` style).

Sizes (widths, levels, depths) come from tensor shapes; what shapes cannot tell (attention heads, latent scaling
factor, default prediction type) comes from the matched family in `FAMILIES`. Families are told apart by their text
encoder (OpenAI CLIP under `cond_stage_model.transformer.` for SD 1, OpenCLIP under `cond_stage_model.model.` for
SD 2, both CLIP ViT-L and OpenCLIP ViT-bigG under `conditioner.embedders.` with the UNet's `label_emb` for SDXL) and
checked against the UNet's transformer projections (1x1 conv for SD 1, linear for SD 2 and SDXL). Input is a state
dict in the original CompVis layout with training buffers, EMA weights and unused text-tower tensors removed. SDXL
variants other than the base layout (the refiner, one tower only) and inpainting UNets are refused by name.

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
from models.keys import (CLIP, OPENCLIP, SDXL_CLIP, SDXL_CONDITIONER, SDXL_LABEL_EMBEDDING, SDXL_OPENCLIP,
                         SDXL_REFINER_OPENCLIP, UNET, VAE)
from models.sdxl import SCALING_FACTOR as SDXL_SCALING_FACTOR
from models.toy import TOY_HEADS, TOY_SCALING_FACTOR, TOY_SIZE, TOY_UNET_CHANNELS

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
    text2_prefix: str | None = None  # SDXL: the OpenCLIP ViT-bigG tower beside the CLIP one
    native_size: int | None = None  # the side it was trained at; None: by prediction type (NATIVE_SIZE)
    sampler: str = "pndm"  # the default sampler and spacing (None: the sampler's own), as the family's scheduler config
    spacing: str | None = None
    force_upcast: bool = False  # decode float16 weights in float32 (the SDXL VAE overflows float16)
    zeros_for_empty_prompt: bool = False  # no negative prompt: zero unconditional embeddings instead of encoding ""

    def sampler_and_spacing(self, sampler: str | None, spacing: str | None) -> tuple[str, str | None]:
        """The one rule for an unset (None) sampler and spacing: the family's (spacing None here: the sampler's own).
        The pipeline's door applies it; the command line and the evaluation ask it for what they record."""
        return sampler or self.sampler, spacing or self.spacing


FAMILIES = {
    "sd1-toy": Family("sd1-toy", "the toy SD 1 model trained on synthetic shapes (models/toy.py; UNet width 64)", CLIP,
                      "clip", "quick_gelu", None, TOY_HEADS, -1, False, False, TOY_SCALING_FACTOR, "epsilon",
                      unet_channels=TOY_UNET_CHANNELS, native_size=TOY_SIZE),
    "sd1": Family("sd1", "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder, conv projections)", CLIP, "clip",
                  "quick_gelu", None, 8, -1, False, False, 0.18215, "epsilon"),
    "sd2": Family("sd2", "Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder, linear projections)", OPENCLIP,
                  "openclip", "gelu", 0, -1, 64, True, True, 0.18215, "v"),
    "sdxl": Family("sdxl", "Stable Diffusion XL base (CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers, label_emb)",
                   SDXL_CLIP, "clip", "quick_gelu", None, -1, 64, True, False, SDXL_SCALING_FACTOR, "epsilon",
                   text2_prefix=SDXL_OPENCLIP, native_size=1024, sampler="euler", spacing="leading", force_upcast=True,
                   zeros_for_empty_prompt=True),
}
NATIVE_SIZE = {"epsilon": 512, "v": 768}  # SD 1.x and 2.x base were trained at 512 px, the SD 2.x v-models at 768


def native_size(cfg: ModelConfig) -> int:
    """The side a model of this config was trained at: its family's, else by prediction type."""
    return FAMILIES[cfg.family].native_size or NATIVE_SIZE[cfg.prediction]


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


def check_sdxl_variant(sd: dict, path: str) -> None:
    """SDXL files other than the base model's layout get one error naming what was found."""
    if any(k.startswith(SDXL_REFINER_OPENCLIP) for k in sd):
        raise _unsupported(path, f"an SDXL refiner (OpenCLIP-only text conditioning under {SDXL_REFINER_OPENCLIP}, "
                                 "aesthetic-score label_emb)")
    towers = [prefix for prefix in (SDXL_CLIP, SDXL_OPENCLIP) if any(k.startswith(prefix) for k in sd)]
    has_label_emb = any(k.startswith(SDXL_LABEL_EMBEDDING) for k in sd)
    if any(k.startswith(SDXL_MARKERS) for k in sd) and (len(towers) != 2 or not has_label_emb):
        found = ", ".join(towers + ([SDXL_LABEL_EMBEDDING] if has_label_emb else [])) or "neither text tower"
        raise _unsupported(path, f"an SDXL-like checkpoint with {found} (SDXL base has both {SDXL_CLIP} and "
                                 f"{SDXL_OPENCLIP} and {SDXL_LABEL_EMBEDDING})")


def match_family(sd: dict, path: str) -> Family:
    check_sdxl_variant(sd, path)
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
    depth = detect_depth(sd, first, path)
    return UNetConfig(
        in_channels=conv_in.shape[1],
        out_channels=sd[UNET + "out.2.weight"].shape[0],
        model_channels=mc,
        channel_mult=tuple(sd[UNET + f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] // mc for i in first),
        num_res_blocks=res_blocks,
        attention_levels=tuple(level for level, i in enumerate(first) if UNET + f"input_blocks.{i}.1.proj_in.weight" in sd),
        num_heads=family.num_heads,
        num_head_channels=family.num_head_channels,
        transformer_depth=depth,
        context_dim=sd[UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        use_linear_proj=linear,
        upcast_attention=family.upcast_attention,
        adm_in_channels=sd[SDXL_LABEL_EMBEDDING + "0.0.weight"].shape[1] if SDXL_LABEL_EMBEDDING + "0.0.weight" in sd else 0,
    )


def detect_depth(sd: dict, first: list[int], path: str) -> int | tuple[int, ...]:
    """Transformer blocks per level (0: no attention) from each level's first input block; one number when every
    attention level and the middle block agree (SD 1/2), else per level with the middle block taking the last's."""
    blocks = r"\.1\.transformer_blocks\.(\d+)\."
    per_level = tuple(len(_indices(sd, re.escape(UNET) + rf"input_blocks\.{i}{blocks}")) for i in first)
    middle = len(_indices(sd, re.escape(UNET) + rf"middle_block{blocks}"))
    if all(d in (0, middle) for d in per_level):
        return middle
    if per_level[-1] != middle:
        raise _unsupported(path, f"a UNet with transformer depths {per_level} per level but {middle} in the middle "
                                 "block (supported: the middle block as deep as the last level)")
    return per_level


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
        force_upcast=family.force_upcast,
    )


def detect_text(sd: dict, family: Family) -> TextConfig:
    return detect_tower(sd, family.text_prefix, family.text_kind, family.text_activation, family.pad_token_id)


def detect_tower(sd: dict, p: str, kind: str, activation: str, pad_token_id: int | None) -> TextConfig:
    """One text tower's sizes under prefix `p`; a final norm and a pooled projection where the tensors are there."""
    if kind == "openclip":
        tokens, positions = sd[p + "token_embedding.weight"], sd[p + "positional_embedding"]
        layers = _indices(sd, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
        fc1 = sd[p + "transformer.resblocks.0.mlp.c_fc.weight"]
    else:
        tokens, positions = sd[p + "embeddings.token_embedding.weight"], sd[p + "embeddings.position_embedding.weight"]
        layers = _indices(sd, re.escape(p) + r"encoder\.layers\.(\d+)\.")
        fc1 = sd[p + "encoder.layers.0.mlp.fc1.weight"]
    width = tokens.shape[1]
    return TextConfig(
        kind=kind,
        vocab_size=tokens.shape[0],
        max_length=positions.shape[0],
        width=width,
        layers=len(layers),
        heads=max(1, width // 64),  # CLIP and OpenCLIP text towers use 64-wide heads
        mlp_width=fc1.shape[0],
        activation=activation,
        pad_token_id=pad_token_id,
        final_norm=kind == "openclip" or p + "final_layer_norm.weight" in sd,
        projection_dim=sd[p + "text_projection"].shape[1] if p + "text_projection" in sd else 0,
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
        # SDXL's second tower: OpenCLIP ViT-bigG (gelu, its tokenizer pads with 0)
        text2 = detect_tower(sd, family.text2_prefix, "openclip", "gelu", 0) if family.text2_prefix else None
    except KeyError as missing:
        raise CheckpointError(f"{path}: incomplete {family.name} checkpoint, missing key {missing.args[0]}") from None
    chosen, reason = detect_prediction(sd, family, prediction, hint)
    return Detection(ModelConfig(family.name, unet, vae, text, chosen, text2), reason)


def detect_config(sd: dict[str, torch.Tensor], path: str = "<state dict>", prediction: str | None = None) -> ModelConfig:
    return detect(sd, path, prediction).config
