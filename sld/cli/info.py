"""`sld info PATH`: what a checkpoint holds, read from its tensors without building the model."""
from pathlib import Path

import torch

from models import keys
from models.config import TextConfig
from models.detect import FAMILIES
from models.diffusers_keys import scheduler_prediction
from models.loader import prepare_state_dict, random_weights, read_checkpoint
from models.sd1 import TINY_SD1
from sld.api import BUILT_IN, TINY, TOY, checkpoint_path

PARTS = {"unet": keys.UNET, "vae": keys.VAE, "text encoder": keys.TEXT}
# SDXL's two text towers, named after what they are
SDXL_PARTS = {"unet": keys.UNET, "vae": keys.VAE, "text encoder 1": keys.SDXL_CLIP, "text encoder 2": keys.SDXL_OPENCLIP}
TOWER_NAMES = {"clip": "CLIP", "openclip": "OpenCLIP"}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtypes(sd: dict[str, torch.Tensor], parts: dict[str, str]) -> str:
    """One dtype when all parts agree, else the dtype(s) of each part."""
    per_part = {part: sorted({_dtype_name(v.dtype) for k, v in sd.items() if k.startswith(prefix)})
                for part, prefix in parts.items()}
    every = sorted({name for names in per_part.values() for name in names})
    if len(every) == 1:
        return every[0]
    return "; ".join(f"{part} {'/'.join(names)}" for part, names in per_part.items())


def _source(path: str) -> str:
    if path == TINY:
        return "in memory: random weights of the tiny SD 1 topology, seed 0 (draws noise)"
    if path == TOY:
        return f"{checkpoint_path(TOY)} (the toy model shipped in the package)"
    kind = "diffusers folder" if Path(path).is_dir() else f"{Path(path).suffix or 'extensionless'} file"
    return f"{Path(path).resolve()} ({kind})"


def describe_checkpoint(path: str) -> list[tuple[str, str]]:
    """(field, value) lines: source, family, prediction, dtype, parameter counts per part, EMA.

    The tensors go through models.loader.prepare_state_dict, as load_checkpoint does, short of building the model.
    """
    raw = random_weights(TINY_SD1, seed=0) if path == TINY else read_checkpoint(checkpoint_path(path))
    ema_tensors = sum(1 for key in raw if key.startswith(keys.EMA))
    hint = None if path in BUILT_IN else scheduler_prediction(path)
    sd, found = prepare_state_dict(raw, str(path), hint=hint)
    cfg = found.config
    parts = PARTS if cfg.text2 is None else SDXL_PARTS
    counts = {part: sum(v.numel() for k, v in sd.items() if k.startswith(prefix)) for part, prefix in parts.items()}
    towers = [cfg.text] if cfg.text2 is None else [cfg.text, cfg.text2]
    lines = [("source", _source(path)),
             ("family", f"{cfg.family} ({FAMILIES[cfg.family].description})"),
             ("prediction", f"{cfg.prediction} ({found.prediction_reason})"),
             ("dtype", _dtypes(sd, parts))]
    lines += [(f"text encoder{'' if len(towers) == 1 else f' {i}'}", _tower(text))
              for i, text in enumerate(towers, start=1)]
    lines += [(f"parameters {part}", f"{count:,}") for part, count in counts.items()]
    lines.append(("parameters total", f"{sum(counts.values()):,}"))
    lines.append(("ema", f"yes ({ema_tensors} model_ema tensors)" if ema_tensors else "no"))
    return lines


def _tower(text: TextConfig) -> str:
    """What one text tower is and which of its outputs the model uses."""
    if text.projection_dim:
        output = (f"context from the penultimate layer without the final norm; pooled {text.projection_dim}-wide "
                  "(final norm at the end token, projected)")
    else:
        output = "context after the final norm" if text.final_norm else "context without the final norm"
    return f"{TOWER_NAMES[text.kind]}, width {text.width}, {text.layers} layers run, {output}"


def run_info(path: str) -> int:
    for name, value in describe_checkpoint(path):
        print(f"{name}: {value}")
    return 0
