"""LoRA files merged into the weights at load: `W += scale * alpha / rank * up @ down` per trained module.

Formats (module names: models/adapter_keys.py): kohya / A1111 (`<module>.lora_down.weight`, `.lora_up.weight`,
`.alpha`), LoCon convolutions among them (down [rank, in, kh, kw], up [out, rank, 1, 1]), and diffusers/PEFT
(`<component>.<module>.lora_A.weight` / `.lora_B.weight`; alpha from `.alpha` keys or the `lora_adapter_metadata`
that diffusers' `save_lora_weights` writes). Alpha defaults to the rank. `check_lora` reads and checks a file against
the model's shapes before anything changes; `merge_lora` then adds the deltas.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from models.adapter_keys import Target
from models.checkpoint import CheckpointError, format_keys, read_weight_file

PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "lora_A.weight": "down", "lora_B.weight": "up",
         "alpha": "alpha"}
KEY = re.compile(r"(.+?)\.(" + "|".join(re.escape(part) for part in PARTS) + ")")
METADATA_KEY = "lora_adapter_metadata"  # diffusers' save_lora_weights: {"unet.lora_alpha": 8, "unet.r": 4, ...}
EXPECTED = ("kohya names (lora_unet_*, lora_te_*; SDXL: lora_te1_*, lora_te2_*) with .lora_down.weight, "
            ".lora_up.weight and .alpha, or diffusers names (unet.*, text_encoder.*; SDXL: text_encoder_2.*) with "
            ".lora_A.weight and .lora_B.weight")


class AdapterError(CheckpointError):
    """A LoRA or embedding file that does not fit the model; raised before the model is changed."""


@dataclass(frozen=True)
class LoraLayer:
    module: str  # as the file names it
    target: Target
    down: torch.Tensor  # [rank, in] or [rank, in, kh, kw]
    up: torch.Tensor  # [out, rank] or [out, rank, 1, 1]
    factor: float  # scale * alpha / rank


def _metadata_alphas(path: Path) -> dict[str, float]:
    """Per diffusers component ("unet.", "text_encoder."), the `lora_alpha` of diffusers' adapter metadata."""
    if path.suffix.lower() != ".safetensors":
        return {}
    with safe_open(path, "pt") as file:
        text = (file.metadata() or {}).get(METADATA_KEY)
    config = json.loads(text) if text else {}
    patterns = [key for key in config if key.endswith(("alpha_pattern", "rank_pattern")) and config[key]]
    if patterns:
        raise AdapterError(f"{path}: per-module alpha or rank patterns in {METADATA_KEY} ({format_keys(patterns)}) "
                           "are not supported; allowed: one lora_alpha per component, or .alpha keys")
    alphas = {key: value for key, value in config.items() if key.endswith(".lora_alpha")}
    return {key.removesuffix("lora_alpha"): float(value) for key, value in alphas.items()}


def _modules(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors grouped by module: {"down": ..., "up": ..., "alpha": ...}; unknown or incomplete keys raise."""
    modules, unknown = {}, []
    for key, tensor in tensors.items():
        if match := KEY.fullmatch(key):
            modules.setdefault(match[1], {})[PARTS[match[2]]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise AdapterError(f"{path}: keys that are not LoRA weights ({len(unknown)}): {format_keys(unknown)}; "
                           f"expected {EXPECTED} (LoHa, LoKr, DoRA and Tucker LoCon are not supported)")
    incomplete = [module for module, parts in modules.items() if not {"down", "up"} <= set(parts)]
    if incomplete:
        raise AdapterError(f"{path}: modules without both a down and an up weight ({len(incomplete)}): "
                           f"{format_keys(incomplete)}")
    return modules


def delta_shape(down: torch.Tensor, up: torch.Tensor) -> tuple[int, ...]:
    return (up.shape[0], *down.shape[1:])


def _fits(delta: tuple[int, ...], weight: tuple[int, ...]) -> bool:
    """A delta fits its weight when the shapes agree, a 1x1 kernel and a matrix counting as the same."""
    return delta == weight or delta == (*weight, 1, 1) or (*delta, 1, 1) == weight


def _shape_problem(down: torch.Tensor, up: torch.Tensor, weight: tuple[int, ...]) -> str | None:
    matrices = down.ndim in (2, 4) and up.ndim == down.ndim and up.shape[2:] in ((), (1, 1))
    if not matrices or up.shape[1] != down.shape[0]:
        return f"down {tuple(down.shape)} and up {tuple(up.shape)} are not [rank, in(, kh, kw)] and [out, rank(, 1, 1)]"
    if not _fits(delta_shape(down, up), weight):
        return f"delta {delta_shape(down, up)} for a weight of {weight}"
    return None


def target_shape(target: Target, shapes: dict[str, torch.Size]) -> tuple[int, ...]:
    shape = tuple(shapes[target.key])
    return shape if target.rows is None else (target.rows[1] - target.rows[0], *shape[1:])


def check_lora(path: str, scale: float, targets: dict[str, Target], shapes: dict[str, torch.Size]) -> list[LoraLayer]:
    """The file's layers, each with its target and factor; unmatched names or wrong shapes raise one AdapterError."""
    path = Path(path)
    modules = _modules(path, read_weight_file(path))
    alphas = _metadata_alphas(path)
    unmatched = [module for module in modules if module not in targets]
    if unmatched:
        raise AdapterError(f"{path}: LoRA modules that match nothing in the model ({len(unmatched)}/{len(modules)}): "
                           f"{format_keys(unmatched)}; expected {EXPECTED}, naming the model's modules")
    layers, misshaped = [], []
    for module, parts in modules.items():
        down, up, target = parts["down"], parts["up"], targets[module]
        if target.key is None:  # a module the model never runs (models/adapter_keys.py UNUSED): nothing to merge
            continue
        if problem := _shape_problem(down, up, target_shape(target, shapes)):
            misshaped.append(f"{module} ({problem})")
            continue
        rank = down.shape[0]
        default_alpha = next((a for prefix, a in alphas.items() if module.startswith(prefix)), rank)
        alpha = float(parts["alpha"]) if "alpha" in parts else default_alpha
        layers.append(LoraLayer(module, target, down, up, scale * alpha / rank))
    if misshaped:
        raise AdapterError(f"{path}: LoRA weights of the wrong shape ({len(misshaped)}): {format_keys(misshaped)}")
    return layers


def lora_delta(layer: LoraLayer, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """scale * alpha / rank * up @ down, in `dtype` on `device`; kernels as [out, in * kh * kw] products (LoCon)."""
    down, up = layer.down.to(device, dtype), layer.up.to(device, dtype)
    # kohya sd-scripts networks/lora.py merge_to: up @ down scaled by multiplier * alpha / rank
    return layer.factor * (up.flatten(1) @ down.flatten(1)).reshape(delta_shape(down, up))


@torch.no_grad()
def merge_lora(model: nn.Module, layers: list[LoraLayer]) -> None:
    """Add every layer's delta to its weight; computed in float64 for float64 weights, else float32, then cast."""
    for layer in layers:
        weight = model.get_parameter(layer.target.key)
        rows = slice(*layer.target.rows) if layer.target.rows else slice(None)
        compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
        merged = weight[rows].to(compute) + lora_delta(layer, compute, weight.device).reshape(weight[rows].shape)
        weight[rows] = merged.to(weight.dtype)
