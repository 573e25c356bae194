"""`sld.load`: a checkpoint path (or a built-in name, "toy" or "tiny") -> a ready Pipeline."""
import dataclasses
import os
import sys
from collections.abc import Sequence

import torch

from models.adapters import apply_adapters, check_adapters, embedding_spec, lora_spec
from models.loader import load_checkpoint, model_shapes, random_model
from models.sd1 import TINY_SD1
from models.toy import TOY_WEIGHTS
from sampling.parameterization import PREDICTIONS
from sld.pipeline import Pipeline
from sld.settings import ModelSection, embedding_specs, lora_specs, torch_dtype

TINY = "tiny"
TOY = "toy"
BUILT_IN = (TOY, TINY)
TINY_SIZE = 64  # the random SD 1 network draws 64x64 pictures, as the toy model (its family's size)


def check_prediction_override(prediction: str | None) -> None:
    if prediction is not None and prediction not in PREDICTIONS:
        allowed = " or ".join(repr(p) for p in PREDICTIONS)
        raise ValueError(f"prediction={prediction!r} is not allowed; use None (detect), {allowed}")


def load(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, ema: bool = False,
         prediction: str | None = None, loras: Sequence = (), embeddings: Sequence = ()) -> Pipeline:
    """Load a `.safetensors` / `.ckpt` single file or a diffusers folder; the family is detected from its tensors.

    `path="toy"` loads the toy model shipped in the package (trained here on synthetic shape scenes, 64x64, see
    models/toy.py). `path="tiny"` builds a small random-weight SD 1 model in memory: it draws noise, and exists to
    test without a checkpoint. `prediction` overrides the detected type ("epsilon" | "v");
    the decision and its reason are printed once to stderr (rule: models/detect.py).

    `loras`: paths or (path, scale) pairs, merged into the UNet and text tower weights in order
    (`scale * alpha / rank * up @ down`). `embeddings`: textual-inversion files, paths or (path, token) pairs; the
    token is the file stem unless given. Every file is checked before the model changes (models/adapters.py).
    """
    check_prediction_override(prediction)
    loras, embeddings = tuple(map(lora_spec, loras)), tuple(map(embedding_spec, embeddings))
    if str(path) == TINY:
        cfg = TINY_SD1 if prediction is None else dataclasses.replace(TINY_SD1, prediction=prediction)
        adapters = check_adapters(cfg, model_shapes(cfg), loras, embeddings)
        model = random_model(cfg, seed=0, dtype=dtype, device=device)
        apply_adapters(model, adapters)
        return Pipeline(model, source=TINY, loras=loras, embeddings=embeddings, native_size=TINY_SIZE)
    source = TOY if str(path) == TOY else path
    loaded = load_checkpoint(checkpoint_path(path), device=device, dtype=dtype, ema=ema, prediction=prediction,
                             loras=loras, embeddings=embeddings)
    cfg = loaded.model.cfg
    print(f"sld: {loaded.path}: {cfg.family}, prediction={cfg.prediction!r} ({loaded.prediction_reason})",
          file=sys.stderr)
    return Pipeline(loaded.model, source=source, loras=loras, embeddings=embeddings)


def checkpoint_path(path: str) -> str:
    """The file behind a built-in name ("toy"), else `path` itself."""
    if str(path) != TOY:
        return str(path)
    if not TOY_WEIGHTS.is_file():
        raise FileNotFoundError(f"the toy model's weights are missing from the installed package ({TOY_WEIGHTS}); "
                                "reinstall it, or train them with scripts/train_toy.py")
    return str(TOY_WEIGHTS)


def check_model_path(path: str) -> None:
    """A --model value names a built-in model or something that exists (a clear error before any loading)."""
    if path not in BUILT_IN and not os.path.exists(path):
        raise ValueError(f"--model {path!r}: no such file or folder; allowed: 'toy', 'tiny', a .safetensors or .ckpt "
                         "file, or a diffusers folder")


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device; allowed: cpu, cuda, cuda:N, mps") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise ValueError(f"--device {name!r} is not available on this machine; allowed: cpu"
                         + (", cuda" if torch.cuda.is_available() else ""))
    return device


def check_adapter_paths(section: ModelSection) -> None:
    """Every --lora and --embedding file exists (a clear error before any loading)."""
    for flag, specs in (("--lora (model.loras)", lora_specs(section)),
                        ("--embedding (model.embeddings)", embedding_specs(section))):
        for spec in specs:
            if not os.path.isfile(spec.path):
                form = "FILE[:SCALE]" if flag.startswith("--lora") else "FILE[:TOKEN]"
                raise ValueError(f"{flag} {spec.path!r}: no such file; allowed: {form} with an existing .safetensors, "
                                 ".pt, .ckpt, .pth or .bin file")


def check_model_section(section: ModelSection) -> None:
    check_model_path(section.path)
    check_adapter_paths(section)


def load_pipeline(section: ModelSection) -> Pipeline:
    """The model a run's model section names (with its adapters), its paths and device checked first."""
    check_model_section(section)
    return load(section.path, device=check_device(section.device), dtype=torch_dtype(section.dtype),
                ema=section.ema, prediction=section.prediction, loras=lora_specs(section),
                embeddings=embedding_specs(section))

