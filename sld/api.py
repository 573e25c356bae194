"""`sld.load`: a checkpoint path (or "tiny") -> a ready Pipeline."""
import dataclasses
import sys

import torch

from models.detect import check_prediction_override
from models.loader import load_checkpoint, random_model
from models.sd1 import TINY_SD1
from sld.pipeline import Pipeline

TINY = "tiny"


def load(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, ema: bool = False,
         prediction: str | None = None) -> Pipeline:
    """Load a `.safetensors` / `.ckpt` single file or a diffusers folder; the family is detected from its tensors.

    `path="tiny"` builds a small random-weight SD 1 model in memory: it draws noise, and exists to prove an
    install end to end and to test without a checkpoint. `prediction` overrides the detected type ("epsilon" | "v");
    the decision and its reason are printed once to stderr (rule: models/detect.py).
    """
    check_prediction_override(prediction)
    if str(path) == TINY:
        cfg = TINY_SD1 if prediction is None else dataclasses.replace(TINY_SD1, prediction=prediction)
        return Pipeline(random_model(cfg, seed=0, dtype=dtype, device=device), source=TINY)
    loaded = load_checkpoint(path, device=device, dtype=dtype, ema=ema, prediction=prediction)
    cfg = loaded.model.cfg
    print(f"sld: {loaded.path}: {cfg.family}, prediction={cfg.prediction!r} ({loaded.prediction_reason})",
          file=sys.stderr)
    return Pipeline(loaded.model, source=loaded.path)
