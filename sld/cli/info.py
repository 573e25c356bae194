"""`sld info PATH`: what a checkpoint holds, read from its tensors without building the model."""
from pathlib import Path

import torch

from models import keys
from models.detect import FAMILIES
from models.diffusers_keys import scheduler_prediction
from models.loader import prepare_state_dict, random_weights, read_checkpoint
from models.sd1 import TINY_SD1
from sld.api import BUILT_IN, TINY, TOY, checkpoint_path

PARTS = {"unet": keys.UNET, "vae": keys.VAE, "text encoder": keys.TEXT}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtypes(sd: dict[str, torch.Tensor]) -> str:
    """One dtype when all parts agree, else the dtype(s) of each part."""
    per_part = {part: sorted({_dtype_name(v.dtype) for k, v in sd.items() if k.startswith(prefix)})
                for part, prefix in PARTS.items()}
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
    counts = {part: sum(v.numel() for k, v in sd.items() if k.startswith(prefix)) for part, prefix in PARTS.items()}
    lines = [("source", _source(path)),
             ("family", f"{cfg.family} ({FAMILIES[cfg.family].description})"),
             ("prediction", f"{cfg.prediction} ({found.prediction_reason})"),
             ("dtype", _dtypes(sd))]
    lines += [(f"parameters {part}", f"{count:,}") for part, count in counts.items()]
    lines.append(("parameters total", f"{sum(counts.values()):,}"))
    lines.append(("ema", f"yes ({ema_tensors} model_ema tensors)" if ema_tensors else "no"))
    return lines


def run_info(path: str) -> int:
    for name, value in describe_checkpoint(path):
        print(f"{name}: {value}")
    return 0
