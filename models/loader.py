"""Build the networks for a config and fill them from a checkpoint, strictly (nanoGPT `from_pretrained` style).

`StableDiffusion` mirrors the key prefixes of CompVis' LatentDiffusion (`model.diffusion_model`,
`first_stage_model`, `cond_stage_model`; SDXL's `conditioner`) so an original single file loads with one
`load_state_dict`.
Modules are built on the meta device, so no time goes into a random init that the weights overwrite.
"""
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models import keys
from models.adapters import EmbeddingSpec, LoraSpec, apply_adapters, check_adapters
from models.checkpoint import check_keys, drop_training_buffers, read_weight_file, select_weights
from models.diffusers_keys import read_diffusers_folder, scheduler_prediction
from models.clip import CLIPTextEncoder
from models.config import ModelConfig
from models.detect import V_MARKER, Detection, detect
from models.openclip import OpenCLIPTextEncoder, drop_unused_openclip
from models.sdxl import Conditioner, drop_unused_sdxl_text
from models.unet import UNet
from models.vae import AutoencoderKL

class DiffusionWrapper(nn.Module):
    def __init__(self, unet: UNet):
        super().__init__()
        self.diffusion_model = unet


class StableDiffusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = DiffusionWrapper(UNet(cfg.unet))
        self.first_stage_model = AutoencoderKL(cfg.vae)
        if cfg.text2 is not None:
            self.conditioner = Conditioner(cfg.text, cfg.text2)  # SDXL's two towers, sgm's name
        else:
            encoder = OpenCLIPTextEncoder if cfg.text.kind == "openclip" else CLIPTextEncoder
            self.cond_stage_model = encoder(cfg.text)
        self.added_tokens: dict[str, tuple[int, ...]] = {}  # textual-inversion words -> token ids (models/adapters.py)

    @property
    def unet(self) -> UNet:
        return self.model.diffusion_model

    @property
    def vae(self) -> AutoencoderKL:
        return self.first_stage_model

    @property
    def text_encoder(self) -> CLIPTextEncoder | OpenCLIPTextEncoder | Conditioner:
        return self.conditioner if self.cfg.text2 is not None else self.cond_stage_model

    @property
    def device(self) -> torch.device:
        """Where the UNet's weights are (the whole model is moved together)."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's weight dtype: what latents are given in."""
        return next(self.unet.parameters()).dtype


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: StableDiffusion
    path: str
    has_ema: bool
    prediction_reason: str


def read_checkpoint(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint file or diffusers folder -> state dict in the CompVis single-file key layout; `dtype`: the dtype
    the weights are for, so that files stored in another dtype are cast while read (read_weight_file)."""
    path = Path(path)
    return read_diffusers_folder(path, dtype) if path.is_dir() else read_weight_file(path, dtype)


def check_state_dict(model: StableDiffusion, sd: dict[str, torch.Tensor], path: str) -> None:
    """Raise one CheckpointError listing missing, unexpected and mis-shaped keys."""
    check_keys(model.state_dict(), sd, f"{path}: weights do not match the detected {model.cfg.family} model")


def build(cfg: ModelConfig, sd: dict[str, torch.Tensor], device: str | torch.device, dtype: torch.dtype,
          path: str = "<state dict>") -> StableDiffusion:
    """Build on the meta device, check keys and shapes, then adopt the tensors cast once to `dtype` on `device`."""
    with torch.device("meta"):
        model = StableDiffusion(cfg)
    check_state_dict(model, sd, path)
    weights = {k: v.to(device=device, dtype=dtype) for k, v in sd.items()}
    model.load_state_dict(weights, assign=True)
    return model.eval().requires_grad_(False)


def prepare_state_dict(raw: dict[str, torch.Tensor], path: str, ema: bool = False, prediction: str | None = None,
                       hint: str | None = None) -> tuple[dict[str, torch.Tensor], Detection]:
    """The weights a file's tensors give the model (EMA or regular, without training buffers, unused OpenCLIP
    tensors and the `v_pred` marker) and what detection makes of them; `hint`: a diffusers scheduler's prediction."""
    sd = drop_unused_sdxl_text(drop_unused_openclip(drop_training_buffers(select_weights(raw, ema=ema, source=path))))
    found = detect(sd, path, prediction, hint)
    sd.pop(V_MARKER, None)
    return sd, found


def load_checkpoint(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    ema: bool = False, prediction: str | None = None, loras: Sequence[LoraSpec] = (),
                    embeddings: Sequence[EmbeddingSpec] = ()) -> LoadedCheckpoint:
    """The model of a checkpoint, with `loras` merged and `embeddings` added; every adapter is checked against the
    detected model's shapes before the model is built (models/adapters.py)."""
    raw = read_checkpoint(path, dtype)
    has_ema = any(k.startswith(keys.EMA) for k in raw)
    sd, found = prepare_state_dict(raw, str(path), ema, prediction, scheduler_prediction(path))
    adapters = check_adapters(found.config, {k: v.shape for k, v in sd.items()}, loras, embeddings)
    model = build(found.config, sd, device, dtype, str(path))
    apply_adapters(model, adapters)
    return LoadedCheckpoint(model, str(path), has_ema, found.prediction_reason)


def model_shapes(cfg: ModelConfig) -> dict[str, torch.Size]:
    """The shape of every tensor of the model for `cfg` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in StableDiffusion(cfg).state_dict().items()}


def random_weights(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Seeded values (drawn in `dtype`) for EVERY tensor of the model: weights ~ N(0, 1/fan_in), norm scales ~
    1 + N(0, 0.1^2), biases ~ N(0, 0.1^2). Default inits zero some layers (output convs, biases) and would hide
    mapping bugs. Drawing in float32 halves the memory of a full-size model (4 GB instead of 8 GB for SD 1)."""
    shapes = model_shapes(cfg)
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=generator, dtype=dtype)
        if name.endswith("weight") and len(shape) >= 2:
            weights[name] = noise / math.sqrt(math.prod(shape[1:]))
        elif name.endswith("weight"):
            weights[name] = 1.0 + 0.1 * noise
        else:
            weights[name] = 0.1 * noise
    return weights


def random_model(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> StableDiffusion:
    return build(cfg, random_weights(cfg, seed), device, dtype, f"<random {cfg.family} weights, seed {seed}>")
