"""Safe reading of Stable Diffusion checkpoints into plain CompVis-layout state dicts.

`read_weight_file` accepts a `.safetensors` file (memory-mapped, zero-copy) or a pickled
`.ckpt/.pt/.pth/.bin` file (``torch.load(weights_only=True)`` with only the few extra globals
real SD files need); diffusers folders are converted to CompVis names by models/diffusers_keys.py
(`models.loader.read_checkpoint` takes either). `select_weights` picks
the regular or the EMA UNet weights and `drop_training_buffers` removes what inference does
not use. Nothing here casts dtypes or builds modules.
"""

from __future__ import annotations

import _compat_pickle
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from models import keys

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses longer headers
ALLOWED_FORMATS = "a .safetensors, .ckpt, .pt, .pth or .bin file, or a diffusers folder (unet/, vae/, text_encoder/)"


# DDPM schedule buffers and training-only tensors that CompVis LatentDiffusion files carry.
TRAINING_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    keys.CLIP + "embeddings.position_ids",
    keys.SDXL_CLIP + "embeddings.position_ids",
    "denoiser.sigmas",  # sgm's (SDXL's) DiscreteDenoiser keeps its training sigmas in some files
)
OLD_TEXT_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read as the expected weights."""


class LightningModelCheckpointStub:
    """Inert stand-in for `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`.

    Lightning pickles its checkpoint callback next to the weights; unpickling it into this
    empty class keeps the file loadable without Lightning and without running any of its code.
    """


def format_keys(keys, limit: int = 5) -> str:
    """The first `limit` keys (sorted) and how many more there are: "'a', 'b' ... and 37 more"."""
    ordered = sorted(keys)
    shown = ", ".join(repr(key) for key in ordered[:limit])
    hidden = len(ordered) - limit
    return f"{shown} ... and {hidden} more" if hidden > 0 else shown


def check_keys(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], what: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key; `what` opens the message
    ("<file>: weights do not match ...")."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = [f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
                 for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape]
    problems = [f"{name} ({len(keys)}): {format_keys(keys)}"
                for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshaped))
                if keys]
    if problems:
        raise CheckpointError(f"{what}; " + "; ".join(problems))


def adopt_weights(model: nn.Module, sd: dict[str, torch.Tensor], device: str | torch.device, dtype: torch.dtype,
                  what: str) -> nn.Module:
    """`model`, built on the meta device, takes `sd` once every key and shape is checked (`check_keys`): floating
    tensors cast once to `dtype`, all moved to `device`; returned in eval mode without gradients."""
    check_keys(model.state_dict(), sd, what)
    weights = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in sd.items()}
    model.load_state_dict(weights, assign=True)
    return model.eval().requires_grad_(False)


def _safe_globals() -> list:
    """The globals beyond torch's own allowlist that real SD checkpoints need, nothing else."""
    numpy_scalar = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar (numpy._core in 2.x)
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return [
        (LightningModelCheckpointStub, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        (numpy_scalar, "numpy.core.multiarray.scalar"),
        (numpy_scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


def _python3_global(pickled_name: str) -> str:
    """The global as Python 3 resolves it: torch strips `builtins.`, protocol 2 writes py2 names."""
    module, _, name = pickled_name.rpartition(".")
    module = module or "builtins"
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _refusal(path: Path, error: pickle.UnpicklingError) -> CheckpointError:
    """Turn the weights-only unpickler's refusal into one message naming the global."""
    message = str(error)
    found = re.search(r"GLOBAL (\S+)", message)
    if found is None:
        lines = [line.strip() for line in message.split("WeightsUnpickler error:")[-1].splitlines()]
        reason = [line for line in lines if line and not line.startswith("Check the documentation")][-1:]
        return CheckpointError(
            f"{path}: not a torch.save checkpoint of tensors that the safe (weights_only) loader "
            f"accepts ({''.join(reason) or message})"
        )
    pickled = found.group(1)
    name = _python3_global(pickled)
    stored = f" (pickled as '{pickled}')" if name != pickled and "." in pickled else ""
    return CheckpointError(
        f"{path}: refused to unpickle the global '{name}'{stored}; only tensors, PyTorch Lightning's "
        "ModelCheckpoint and numpy scalars are accepted, loading arbitrary code is refused"
    )


def read_pickle(path: Path) -> object:
    """torch.load with weights_only=True plus only `_safe_globals`; memory-mapped when zip-based."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise _refusal(path, error) from error
    # torch.load raises many types on corrupt input (RuntimeError, IndexError, KeyError, EOFError, ...).
    except Exception as error:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint, expected a torch.save file ({error})"
        ) from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors alias a private (copy-on-write) memory map of the file: nothing is copied up front."""
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: corrupt or truncated .safetensors file ({error})") from error


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file (name -> dtype, shape, data_offsets) and where the data starts.
    The 8-byte length is bounded by the file and by safetensors' own limit before anything is read."""
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        limit = min(os.fstat(file.fileno()).st_size - 8, SAFETENSORS_MAX_HEADER)
        if not 0 < size <= limit:
            raise CheckpointError(f"{path}: the .safetensors header claims {size} bytes; allowed: 1..{limit} "
                                  "(the file's size and safetensors' header limit)")
        header = json.loads(file.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def _read_safetensors_cast(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors read one at a time with plain file reads and cast to `dtype`: the process never holds the
    stored copy of the whole file (a memory map would stay resident beside the cast copies)."""
    _read_safetensors(path)  # safetensors validates the header, offsets and file size first
    header, start = _safetensors_header(path)
    tensors = {}
    with open(path, "rb") as file:
        for name, info in header.items():
            begin, end = info["data_offsets"]
            file.seek(start + begin)
            data = bytearray(end - begin)
            file.readinto(data)
            stored = SAFETENSORS_DTYPES[info["dtype"]]
            tensor = torch.frombuffer(data, dtype=stored) if data else torch.empty(0, dtype=stored)
            tensor = tensor.reshape(info["shape"])
            tensors[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return tensors


def _needs_cast(path: Path, dtype: torch.dtype | None) -> bool:
    if dtype is None:
        return False
    try:
        header, _ = _safetensors_header(path)
        stored = [SAFETENSORS_DTYPES.get(info["dtype"]) for info in header.values()]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # an unreadable header: _read_safetensors reports it
    if None in stored:
        return False  # a dtype this reader does not know (float8, ...): the memory map handles the file
    return any(d.is_floating_point and d != dtype for d in stored)


def _tensors_only(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    """The state dict under `state_dict` or at the top level, where non-tensor entries are dropped."""
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(loaded).__name__}")
    if isinstance(loaded.get("state_dict"), dict):
        state_dict = loaded["state_dict"]
        not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
        if not_tensors:
            raise CheckpointError(f"{path}: state_dict entries that are not tensors: {format_keys(not_tensors)}")
    else:
        state_dict = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not state_dict:
        raise CheckpointError(f"{path}: no tensors found (looked under 'state_dict' and at the top level)")
    return dict(state_dict)


def read_weight_file(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """One weight file (.safetensors or pickled) -> its tensors, keys as stored. With `dtype`, a .safetensors file
    whose floating tensors are stored in another dtype is read tensor by tensor and cast (see
    `_read_safetensors_cast`); otherwise nothing is cast here."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        state = "unsupported file type" if path.is_file() else "no such file"
        raise CheckpointError(f"{path}: {state}; expected {ALLOWED_FORMATS}")
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors_cast(path, dtype) if _needs_cast(path, dtype) else _read_safetensors(path)
    return _tensors_only(path, read_pickle(path))


def select_weights(sd: dict[str, torch.Tensor], ema: bool, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Regular (ema=False) or EMA (ema=True) UNet weights; every `model_ema.*` key is removed.

    CompVis LitEma stores `model.diffusion_model.X` as `model_ema.` + "diffusion_model.X"
    with the dots removed. `source` names the file in error messages.
    """
    regular = {key: value for key, value in sd.items() if not key.startswith(keys.EMA)}
    if not ema:
        return regular
    ema_keys = {key for key in sd if key.startswith(keys.EMA) and key not in keys.EMA_BOOKKEEPING}
    if not ema_keys:
        raise CheckpointError(
            f"{source}: ema=True was requested but the file has no EMA weights (no 'model_ema.*' keys)"
        )
    unet_keys = [key for key in regular if key.startswith(keys.UNET)]
    # CompVis ldm/modules/ema.py (LitEma): buffer name = parameter name with the dots removed.
    ema_name = {key: keys.EMA + key.removeprefix("model.").replace(".", "") for key in unet_keys}
    missing = [ema_name[key] for key in unet_keys if ema_name[key] not in ema_keys]
    if missing:
        raise CheckpointError(f"{source}: EMA weights incomplete, missing {format_keys(missing)}")
    return {**regular, **{key: sd[ema_name[key]] for key in unet_keys}}


def drop_training_buffers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new dict without `TRAINING_BUFFERS` or the VAE's training losses, with old text keys normalised."""
    renamed = {}
    for key, value in sd.items():
        if key.startswith(keys.OLD_CLIP) and key[len(keys.OLD_CLIP) :].startswith(OLD_TEXT_PARTS):
            key = keys.CLIP + key[len(keys.OLD_CLIP) :]
        renamed[key] = value
    return {
        key: value
        for key, value in renamed.items()
        if key not in TRAINING_BUFFERS and not key.startswith(keys.VAE_TRAINING)
    }
