"""Diffusers-folder weights -> the CompVis single-file key layout the models are named after.

The maps are derived from the keys present (layers per block, which up levels have attention,
number of decoder levels), mirroring diffusers' `convert_ldm_*_checkpoint` in
`diffusers/loaders/single_file_utils.py` in the opposite direction. Only names change, plus
the VAE mid-attention Linear weights [C, C] that CompVis stores as 1x1 convs [C, C, 1, 1].
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from models import keys
from models.checkpoint import CheckpointError, format_keys, read_weight_file

UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's text_time added conditioning
    "add_embedding.linear_2": "label_emb.0.2",
}
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# SpatialTransformer modules: identical names in both layouts.
UNET_TRANSFORMER = re.compile(
    r"norm|proj_in|proj_out|transformer_blocks\.\d+\.(norm[123]|attn[12]\.(to_[qkv]|to_out\.0)|ff\.net\.(0\.proj|2))"
)
UNET_MID = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}

VAE_TOP_LEVEL = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
# Current diffusers names, then the pre-0.14 ones.
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}
VAE_LINEAR_AS_CONV = re.compile(r".*\.mid\.attn_1\.(q|k|v|proj_out)\.weight")

CLIP_MODULE = re.compile(
    r"embeddings\.(token|position)_embedding|final_layer_norm"
    r"|encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])"
)
# transformers < 5 saves CLIPTextModel under `text_model.`, transformers 5 without it.
CLIP_OPTIONAL_PREFIX = "text_model."
CLIP_DROPPED = ("text_model.embeddings.position_ids", "embeddings.position_ids")

WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)
FP16_WEIGHT_FILES = tuple(f"{Path(name).stem}.fp16{Path(name).suffix}" for name in WEIGHT_FILES)


def _count(keys, pattern: str) -> int:
    """How many distinct indices the first group of `pattern` takes over `keys`."""
    return len({match[1] for key in keys if (match := re.match(pattern, key))})


def _convert(
    sd: dict[str, torch.Tensor], rename: Callable[[str], str | None], prefix: str, part: str, dropped=()
) -> dict[str, torch.Tensor]:
    """Rename every `<module>.weight|bias` with `rename(module)`; unknown keys raise one error."""
    converted, unknown = {}, []
    for key, tensor in sd.items():
        if key in dropped:
            continue
        module, _, param = key.rpartition(".")
        new_module = rename(module) if param in ("weight", "bias") else None
        if new_module is None:
            unknown.append(key)
        else:
            converted[f"{prefix}{new_module}.{param}"] = tensor
    if unknown:
        raise CheckpointError(f"unknown diffusers {part} keys ({len(unknown)}): {format_keys(unknown)}")
    return converted


def _unet_block_inner(kind: str, inner: str) -> str | None:
    if kind == "resnets":
        return UNET_RESNET.get(inner)
    return inner if UNET_TRANSFORMER.fullmatch(inner) else None


def _unet_block(block: str, kind: str, inner: str) -> str | None:
    """input/output_blocks.N hold [resnet, attention, (upsampler)] at positions 0, 1, (1 or 2)."""
    name = _unet_block_inner(kind, inner)
    return None if name is None else f"{block}.{0 if kind == 'resnets' else 1}.{name}"


# Block numbering as diffusers' convert_ldm_unet_checkpoint inverts it: down level L, resnet J ->
# input_blocks.{1 + L*(n+1) + J}; up level L, resnet J -> output_blocks.{L*(n+1) + J} (n+1 resnets per up level).
def unet_module(module: str, layers: int, up_levels_with_attention: set[int]) -> str | None:
    """One diffusers UNet module path -> CompVis; `layers` resnets per down level, one more per up level."""
    if module in UNET_TOP_LEVEL:
        return UNET_TOP_LEVEL[module]
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
        level, kind, index, inner = int(match[1]), match[2], int(match[3]), match[4]
        block = f"input_blocks.{1 + level * (layers + 1) + index}"
        return _unet_block(block, kind, inner) if index < layers else None
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
        return f"input_blocks.{(int(match[1]) + 1) * (layers + 1)}.0.op"
    if match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", module):
        position, name = UNET_MID.get((match[1], int(match[2]))), _unet_block_inner(match[1], match[3])
        return None if position is None or name is None else f"middle_block.{position}.{name}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
        level, kind, index, inner = int(match[1]), match[2], int(match[3]), match[4]
        block = f"output_blocks.{level * (layers + 1) + index}"
        return _unet_block(block, kind, inner) if index <= layers else None
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
        level = int(match[1])
        position = 2 if level in up_levels_with_attention else 1
        return f"output_blocks.{level * (layers + 1) + layers}.{position}.conv"
    return None


def _resnets_per_down_level(sd: dict[str, torch.Tensor]) -> int:
    """CompVis' block numbering needs the same number of resnets in every down level."""
    pairs = {match.groups() for key in sd if (match := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", key))}
    counts = Counter(int(level) for level, _ in pairs)
    if len(set(counts.values())) != 1:
        raise CheckpointError(
            f"expected a diffusers UNet with the same number of resnets in every down block, "
            f"found {dict(sorted(counts.items())) or 'no down_blocks.*.resnets.* keys'}"
        )
    return next(iter(counts.values()))


def unet_to_compvis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict -> `model.diffusion_model.*`."""
    layers = _resnets_per_down_level(sd)
    up_levels_with_attention = {int(m[1]) for key in sd if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", key))}
    return _convert(sd, lambda module: unet_module(module, layers, up_levels_with_attention), keys.UNET, "UNet")


def _vae_module(module: str, up_levels: int) -> str | None:
    """One diffusers AutoencoderKL module path -> CompVis; decoder up_blocks.I is up.{levels-1-I}."""
    if module in ("quant_conv", "post_quant_conv"):
        return module
    side, _, rest = module.partition(".")
    if side not in ("encoder", "decoder"):
        return None
    if rest in VAE_TOP_LEVEL:
        return f"{side}.{VAE_TOP_LEVEL[rest]}"
    if match := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", rest):
        name = VAE_RESNET.get(match[2])
        return None if name is None else f"{side}.mid.block_{int(match[1]) + 1}.{name}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        name = VAE_ATTENTION.get(match[1])
        return None if name is None else f"{side}.mid.attn_1.{name}"
    if side == "encoder" and (match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)):
        name = VAE_RESNET.get(match[3])
        return None if name is None else f"encoder.down.{match[1]}.block.{match[2]}.{name}"
    if side == "encoder" and (match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", rest)):
        return f"encoder.down.{match[1]}.downsample.conv"
    if side == "decoder" and (match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)):
        name = VAE_RESNET.get(match[3])
        return None if name is None else f"decoder.up.{up_levels - 1 - int(match[1])}.block.{match[2]}.{name}"
    if side == "decoder" and (match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", rest)):
        return f"decoder.up.{up_levels - 1 - int(match[1])}.upsample.conv"
    return None


def vae_to_compvis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> `first_stage_model.*` (attention Linear -> 1x1 conv)."""
    up_levels = _count(sd, r"decoder\.up_blocks\.(\d+)\.")
    converted = _convert(sd, lambda module: _vae_module(module, up_levels), keys.VAE, "VAE")
    return {
        key: tensor[:, :, None, None] if tensor.ndim == 2 and VAE_LINEAR_AS_CONV.fullmatch(key) else tensor
        for key, tensor in converted.items()
    }


def _clip_module(module: str) -> str | None:
    inner = module.removeprefix(CLIP_OPTIONAL_PREFIX)
    return inner if CLIP_MODULE.fullmatch(inner) else None


def text_encoder_to_compvis(sd: dict[str, torch.Tensor], prefix: str = keys.CLIP) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel state dict (with or without `text_model.`) -> CompVis text keys under `prefix`."""
    return _convert(sd, _clip_module, prefix, "text encoder", dropped=CLIP_DROPPED)


def weight_file(part: Path) -> Path | None:
    """The part's weights: full precision first, the `.fp16.` variant only when it is all there is."""
    for name in WEIGHT_FILES + FP16_WEIGHT_FILES:
        if (part / name).is_file():
            return part / name
    return None


OPENCLIP_NAMES = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm": "ln_final",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def clip_to_openclip(sd: dict[str, torch.Tensor], text_prefix: str = keys.CLIP,
                     openclip_prefix: str = keys.OPENCLIP) -> dict[str, torch.Tensor]:
    """SD 2's text tower as diffusers stores it (transformers CLIPTextModel names, 23 blocks) -> open_clip names,
    q/k/v fused into `attn.in_proj_*` as nn.MultiheadAttention stores them (inverse of diffusers'
    `convert_open_clip_checkpoint`)."""
    out = {}
    for key, value in sd.items():
        name = key.removeprefix(text_prefix).replace("encoder.layers.", "transformer.resblocks.")
        for old, new in OPENCLIP_NAMES.items():
            name = name.replace(old, new)
        if ".self_attn.q_proj." in name:
            kind = name.rsplit(".", 1)[1]
            fused = [sd[key.replace(".q_proj.", f".{p}_proj.")] for p in "qkv"]
            out[openclip_prefix + name.replace("self_attn.q_proj." + kind, "attn.in_proj_" + kind)] = torch.cat(fused)
        elif not re.search(r"\.self_attn\.[kv]_proj\.", name):
            out[openclip_prefix + name] = value
    return out


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return {}


def scheduler_prediction(path: str | Path) -> str | None:
    """'v' or 'epsilon' from a diffusers folder's scheduler/scheduler_config.json, None when there is none."""
    kind = _read_json(Path(path) / "scheduler" / "scheduler_config.json").get("prediction_type")
    return {"v_prediction": "v", "epsilon": "epsilon"}.get(kind)


def _text_encoder_to_compvis(sd: dict[str, torch.Tensor], part: Path) -> dict[str, torch.Tensor]:
    """SD 2 folders hold the OpenCLIP tower as a GELU CLIPTextModel (config.json `hidden_act`)."""
    converted = text_encoder_to_compvis(sd)
    if _read_json(part / "config.json").get("hidden_act") == "gelu":
        return clip_to_openclip(converted)
    return converted


PROJECTION = "text_projection.weight"


def sdxl_text_encoder_to_compvis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's `text_encoder/` (CLIP ViT-L) -> `conditioner.embedders.0.transformer.text_model.*`."""
    return text_encoder_to_compvis(sd, keys.SDXL_CLIP)


def sdxl_text_encoder_2_to_compvis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's `text_encoder_2/` (transformers CLIPTextModelWithProjection of OpenCLIP ViT-bigG) -> open_clip names
    under `conditioner.embedders.1.model.`; the projection Linear's weight is open_clip's `text_projection`
    transposed (inverse of diffusers' `convert_open_clip_checkpoint`)."""
    if PROJECTION not in sd:
        raise CheckpointError(f"no {PROJECTION!r}: SDXL's second text encoder must be a CLIPTextModelWithProjection")
    text = text_encoder_to_compvis({k: v for k, v in sd.items() if k != PROJECTION}, keys.SDXL_CLIP)
    converted = clip_to_openclip(text, keys.SDXL_CLIP, keys.SDXL_OPENCLIP)
    return {**converted, keys.SDXL_OPENCLIP + "text_projection": sd[PROJECTION].T}


PART_CONVERTERS = {"unet": unet_to_compvis, "vae": vae_to_compvis, "text_encoder": text_encoder_to_compvis}
# SDXL folders are told apart by their second text encoder
SDXL_PART_CONVERTERS = {"unet": unet_to_compvis, "vae": vae_to_compvis, "text_encoder": sdxl_text_encoder_to_compvis,
                        "text_encoder_2": sdxl_text_encoder_2_to_compvis}


def read_diffusers_folder(folder: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A diffusers pipeline folder (unet/, vae/, text_encoder/) -> CompVis-layout state dict."""
    folder = Path(folder)
    converters = SDXL_PART_CONVERTERS if (folder / "text_encoder_2").is_dir() else PART_CONVERTERS
    files = {part: weight_file(folder / part) for part in converters}
    missing = [f"{part}/" for part, file in files.items() if file is None]
    if missing:
        raise CheckpointError(
            f"{folder}: not a diffusers folder with weights; missing {', '.join(missing)} "
            f"(looked for {', '.join(f'{part}/' for part in converters)} each holding one of "
            f"{', '.join(WEIGHT_FILES + FP16_WEIGHT_FILES)})"
        )
    converted = {}
    for part, file in files.items():
        weights = read_weight_file(file, dtype)
        try:
            if converters is PART_CONVERTERS and part == "text_encoder":
                converted.update(_text_encoder_to_compvis(weights, file.parent))
            else:
                converted.update(converters[part](weights))
        except CheckpointError as error:
            raise CheckpointError(f"{file}: {error}") from error
    return converted
