"""LoRA module names -> the CompVis weights they change, beside the diffusers-folder map (models/diffusers_keys.py).

Adapters name the module they train in the diffusers/transformers layout: kohya/A1111 files join its path with
underscores under a per-tower prefix (`lora_unet_down_blocks_0_attentions_0_proj_in`, `lora_te_text_model_encoder_
layers_0_self_attn_q_proj`), diffusers/PEFT files keep the dots under the pipeline's component name (`unet.down_blocks.
0.attentions.0.proj_in`, `text_encoder.text_model...`). Underscores cannot be split back into dots unambiguously
(`transformer_blocks`, `to_q`), so the map goes the other way, as ComfyUI's `model_lora_keys_unet` does: every module
the model has is named in the adapter layouts, through the diffusers -> CompVis module map the folder reader uses.

A target is a weight key and, for the OpenCLIP towers (SD 2, SDXL's second) where q, k and v share one fused
`in_proj_weight`, the rows of it that the adapter's module owns. Each text tower is one `Tower` entry: SDXL has two
(`lora_te1_` / `text_encoder.` and `lora_te2_` / `text_encoder_2.`). SDXL's UNet is also named in CompVis style
(`lora_unet_input_blocks_4_1_proj_in`: kohya trains SDXL on sgm's UNet), which are the model's own names. SDXL runs
its CLIP tower only to the penultimate layer; adapter modules of the last layer are accepted and change nothing
(`UNUSED`), as in the reference, where that layer's output is never read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from models import keys
from models.config import ModelConfig
from models.diffusers_keys import CLIP_OPTIONAL_PREFIX, UNET_RESNET, unet_module


@dataclass(frozen=True)
class Target:
    key: str | None  # the CompVis weight a LoRA delta is added to; None: a module the model never runs (UNUSED)
    rows: tuple[int, int] | None = None  # [start, stop) of the weight's rows; None: the whole weight


UNUSED = Target(None)


@dataclass(frozen=True)
class Tower:
    """One network of the model as adapter files name it: kohya prefixes and the diffusers/PEFT component name."""
    kohya_prefixes: tuple[str, ...]
    peft_prefix: str


UNET_TOWER = Tower(("lora_unet_",), "unet.")
TEXT_TOWER = Tower(("lora_te_", "lora_te1_"), "text_encoder.")
TEXT2_TOWER = Tower(("lora_te2_",), "text_encoder_2.")  # SDXL's OpenCLIP ViT-bigG
CLIP_LAYER_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                      "mlp.fc2")

# CLIPTextModel module (transformers names, under `text_model.encoder.layers.N.`) -> open_clip's, for SD 2.
OPENCLIP_MODULES = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
FUSED_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _transformer_modules(depth: int) -> list[str]:
    blocks = [f"transformer_blocks.{d}.{name}" for d in range(depth)
              for name in (*(f"attn{a}.to_{p}" for a in (1, 2) for p in "qkv"), "attn1.to_out.0", "attn2.to_out.0",
                           "ff.net.0.proj", "ff.net.2")]
    return ["proj_in", "proj_out", *blocks]


def _diffusers_unet_modules(cfg: ModelConfig) -> list[str]:
    """Every module path a diffusers UNet of this config may have (a superset; the caller keeps those that exist)."""
    levels, layers = len(cfg.unet.channel_mult), cfg.unet.num_res_blocks
    resnet = list(UNET_RESNET)
    attention = _transformer_modules(max(cfg.unet.depth(level) for level in range(levels)))
    names = ["time_embedding.linear_1", "time_embedding.linear_2", "conv_in", "conv_out",
             "add_embedding.linear_1", "add_embedding.linear_2"]  # SDXL's label_emb
    for level in range(levels):
        names += [f"down_blocks.{level}.resnets.{j}.{x}" for j in range(layers) for x in resnet]
        names += [f"down_blocks.{level}.attentions.{j}.{x}" for j in range(layers) for x in attention]
        names += [f"up_blocks.{level}.resnets.{j}.{x}" for j in range(layers + 1) for x in resnet]
        names += [f"up_blocks.{level}.attentions.{j}.{x}" for j in range(layers + 1) for x in attention]
        names += [f"down_blocks.{level}.downsamplers.0.conv", f"up_blocks.{level}.upsamplers.0.conv"]
    names += [f"mid_block.resnets.{j}.{x}" for j in (0, 1) for x in resnet]
    return names + [f"mid_block.attentions.0.{x}" for x in attention]


def unet_targets(cfg: ModelConfig, shapes: dict[str, torch.Size]) -> dict[str, Target]:
    """diffusers UNet module path -> the CompVis weight, for every weight matrix or kernel the model has."""
    levels = len(cfg.unet.channel_mult)
    up_with_attention = {levels - 1 - level for level in cfg.unet.attention_levels}
    targets = {}
    for module in _diffusers_unet_modules(cfg):
        compvis = unet_module(module, cfg.unet.num_res_blocks, up_with_attention)
        key = f"{keys.UNET}{compvis}.weight"
        if compvis is not None and key in shapes and len(shapes[key]) >= 2:
            targets[module] = Target(key)
    return targets


def compvis_unet_targets(shapes: dict[str, torch.Size]) -> dict[str, Target]:
    """CompVis UNet module path (`input_blocks.4.1.proj_in`, sgm's names) -> its weight, for every matrix or kernel."""
    pattern = re.compile(re.escape(keys.UNET) + r"(.+)\.weight")
    return {m[1]: Target(key) for key in shapes if (m := pattern.fullmatch(key)) and len(shapes[key]) >= 2}


def clip_targets(shapes: dict[str, torch.Size], prefix: str = keys.CLIP) -> dict[str, Target]:
    """CLIPTextModel module path (`text_model.encoder.layers.0.self_attn.q_proj`) -> the weight: names are shared."""
    pattern = re.compile(re.escape(prefix) + r"(encoder\..+)\.weight")
    return {f"text_model.{m[1]}": Target(key) for key in shapes
            if (m := pattern.fullmatch(key)) and len(shapes[key]) == 2}


def unused_clip_layer(layer: int) -> dict[str, Target]:
    """The modules of a CLIP layer the model never runs (SDXL's last: it takes the penultimate hidden state)."""
    return {f"text_model.encoder.layers.{layer}.{name}": UNUSED for name in CLIP_LAYER_MODULES}


def openclip_targets(shapes: dict[str, torch.Size], prefix: str = keys.OPENCLIP) -> dict[str, Target]:
    """CLIPTextModel module path -> open_clip weight; q, k, v -> their thirds of the fused `in_proj_weight`."""
    pattern = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight")
    targets = {}
    for key in shapes:
        if match := pattern.fullmatch(key):
            layer, width = f"text_model.encoder.layers.{match[1]}.", shapes[key][1]
            block = key.removesuffix("attn.in_proj_weight")
            for index, name in enumerate(FUSED_QKV):
                targets[layer + name] = Target(key, (index * width, (index + 1) * width))
            for name, theirs in OPENCLIP_MODULES.items():
                targets[layer + name] = Target(f"{block}{theirs}.weight")
    return targets


def tower_targets(cfg: ModelConfig, shapes: dict[str, torch.Size]) -> list[tuple[Tower, dict[str, Target]]]:
    unet = (UNET_TOWER, {**unet_targets(cfg, shapes), **compvis_unet_targets(shapes)})
    if cfg.text2 is not None:  # SDXL: CLIP ViT-L run to its penultimate layer, then OpenCLIP ViT-bigG
        clip = {**clip_targets(shapes, keys.SDXL_CLIP), **unused_clip_layer(cfg.text.layers)}
        return [unet, (TEXT_TOWER, clip), (TEXT2_TOWER, openclip_targets(shapes, keys.SDXL_OPENCLIP))]
    text = openclip_targets(shapes) if cfg.text.kind == "openclip" else clip_targets(shapes)
    return [unet, (TEXT_TOWER, text)]


def adapter_targets(cfg: ModelConfig, shapes: dict[str, torch.Size]) -> dict[str, Target]:
    """Every module name an adapter file may use for this model (kohya and diffusers/PEFT spellings) -> its target."""
    names = {}
    for tower, targets in tower_targets(cfg, shapes):
        for module, target in targets.items():
            names[tower.peft_prefix + module] = target
            # transformers 5 saves CLIPTextModel without the `text_model.` level (models/diffusers_keys.py)
            names[tower.peft_prefix + module.removeprefix(CLIP_OPTIONAL_PREFIX)] = target
            names.update({prefix + module.replace(".", "_"): target for prefix in tower.kohya_prefixes})
    return names
