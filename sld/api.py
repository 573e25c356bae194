"""`sld.load`: a checkpoint path (or "tiny") -> a ready Pipeline."""
import torch

from models.loader import load_checkpoint, random_model
from models.sd1 import TINY_SD1
from sld.pipeline import Pipeline

TINY = "tiny"


def load(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, ema: bool = False,
         prediction: str | None = None) -> Pipeline:
    """Load a `.safetensors` / `.ckpt` single file or a diffusers folder; the family is detected from its tensors.

    `path="tiny"` builds a small random-weight SD 1 model in memory: it draws noise, and exists to prove an
    install end to end and to test without a checkpoint. `prediction` overrides the detected type ("epsilon" | "v").
    """
    if str(path) == TINY:
        return Pipeline(random_model(TINY_SD1, seed=0, dtype=dtype, device=device), source=TINY)
    loaded = load_checkpoint(path, device=device, dtype=dtype, ema=ema, prediction=prediction)
    return Pipeline(loaded.model, source=loaded.path)
