"""CLIP ViT image tower with projection (OpenAI CLIP, Radford et al. 2021), for Q16 scoring and the CLIP score.

Attribute names follow transformers' `CLIPVisionModelWithProjection` (`vision_model.*`, `visual_projection`), the
layout of the openai/clip-vit-large-patch14 weight files; OpenAI / open_clip files (`visual.*`) are converted to it
in `from_openai_keys`. The layers are the text encoder's (models/clip.py) without the causal mask.
"""
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.checkpoint import CheckpointError, adopt_weights, format_keys, read_weight_file
from models.clip import CLIPEncoderLayer
from models.layers import Embedding, LayerNorm, Linear

HEAD_WIDTH = 64  # every OpenAI CLIP ViT uses 64-wide attention heads
MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalisation
STD = (0.26862954, 0.26130258, 0.27577711)
PREFIX = "vision_model."
PROJECTION = "visual_projection.weight"
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")
OPENAI_BLOCKS = "visual.transformer.resblocks."
OPENAI_BLOCK_PARTS = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                      "attn.out_proj": "self_attn.out_proj"}


@dataclass(frozen=True)
class VisionConfig:
    """Defaults: ViT-L/14, the tower Q16 was learned on."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_width: int = 4096
    projection_dim: int = 768
    activation: str = "quick_gelu"


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.patch_embedding = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.position_embedding = Embedding((cfg.image_size // cfg.patch_size) ** 2 + 1, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg.width, cfg.heads, cfg.mlp_width, cfg.activation, causal=False) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = LayerNorm(cfg.width)  # sic: transformers' (and so the weight files') spelling
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = LayerNorm(cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, S, S] -> pooled features [B, width] (the class token after the last norm)."""
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(hidden[:, 0])


class CLIPVisionModelWithProjection(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_model = VisionTransformer(cfg)
        self.visual_projection = Linear(cfg.width, cfg.projection_dim, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels -> image embeddings [B, projection_dim] (CLIP's `encode_image`)."""
        return self.visual_projection(self.vision_model(pixels))


def openai_block_keys(key: str, value: torch.Tensor, source: str, target: str) -> dict[str, torch.Tensor]:
    """One tensor of an OpenAI `<source>N.*` residual block under transformers names `<target>N.*` (q/k/v split
    from in_proj); shared by both towers."""
    index, rest = key.removeprefix(source).split(".", 1)
    layer = f"{target}{index}."
    if rest.startswith("attn.in_proj_"):
        kind = rest.rsplit("_", 1)[1]  # weight | bias
        return {f"{layer}self_attn.{name}.{kind}": chunk
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0))}
    module, _, kind = rest.rpartition(".")
    return {layer + f"{OPENAI_BLOCK_PARTS.get(module, module)}.{kind}": value}


def from_openai_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip `visual.*` keys -> transformers names (q/k/v split from in_proj, proj transposed)."""
    renames = {"visual.class_embedding": "embeddings.class_embedding",
               "visual.conv1.weight": "embeddings.patch_embedding.weight",
               "visual.positional_embedding": "embeddings.position_embedding.weight"}
    out = {}
    for key, value in sd.items():
        if key in renames:
            out[PREFIX + renames[key]] = value
        elif key == "visual.proj":
            out[PROJECTION] = value.t()
        elif key.startswith(("visual.ln_pre.", "visual.ln_post.")):
            norm = "pre_layrnorm" if key.startswith("visual.ln_pre.") else "post_layernorm"
            out[PREFIX + f"{norm}.{key.rsplit('.', 1)[1]}"] = value
        elif key.startswith(OPENAI_BLOCKS):
            out.update(openai_block_keys(key, value, OPENAI_BLOCKS, PREFIX + "encoder.layers."))
    return out


def vision_weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower of a CLIP state dict in either layout; text tower, logit scale and buffers dropped."""
    if any(key.startswith("visual.") for key in sd):
        sd = from_openai_keys(sd)
    return {key: value for key, value in sd.items()
            if (key.startswith(PREFIX) or key == PROJECTION) and not key.endswith("position_ids")}


def detect_config(sd: dict[str, torch.Tensor], path: str) -> VisionConfig:
    """Widths, depth, patch and image size from tensor shapes (heads: width / 64, as every OpenAI CLIP ViT)."""
    needed = (PREFIX + "embeddings.patch_embedding.weight", PREFIX + "embeddings.position_embedding.weight",
              PREFIX + "encoder.layers.0.mlp.fc1.weight", PROJECTION)
    absent = [key for key in needed if key not in sd]
    if absent:
        raise CheckpointError(f"{path}: not a CLIP ViT image tower with projection (missing {format_keys(absent)}); "
                              "expected the weights of openai/clip-vit-large-patch14 or OpenAI's ViT-L/14")
    width, _, patch, _ = sd[needed[0]].shape
    grid = math.isqrt(sd[needed[1]].shape[0] - 1)
    layers = len({key.split(".")[3] for key in sd if key.startswith(PREFIX + "encoder.layers.")})
    return VisionConfig(image_size=grid * patch, patch_size=patch, width=width, layers=layers,
                        heads=max(1, width // HEAD_WIDTH), mlp_width=sd[needed[2]].shape[0],
                        projection_dim=sd[PROJECTION].shape[0])


def build_vision_model(cfg: VisionConfig, sd: dict[str, torch.Tensor], device: str | torch.device,
                       dtype: torch.dtype, path: str = "<state dict>") -> CLIPVisionModelWithProjection:
    """Built on the meta device; every key and shape checked, then the tensors adopted in `dtype` on `device`."""
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(cfg)
    return adopt_weights(model, sd, device, dtype, f"{path}: weights do not match a CLIP ViT image tower")


def weight_file(path: str | Path) -> Path:
    """The file itself, or the weight file inside a transformers folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    files = [path / name for name in FOLDER_FILES if (path / name).is_file()]
    if not files:
        raise CheckpointError(f"{path}: a folder without {' or '.join(FOLDER_FILES)}; expected the "
                              "openai/clip-vit-large-patch14 folder or a CLIP weight file")
    return files[0]


def is_torchscript(path: Path) -> bool:
    """torch.jit.save archives carry compiled code (`<archive>/code/...`) beside their tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def read_clip_file(path: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weight file (the file itself, or the one inside a transformers folder) and its tensors, as stored."""
    path = weight_file(path)
    if is_torchscript(path):
        raise CheckpointError(f"{path}: a TorchScript archive (as OpenAI's ViT-L-14.pt); its weights load only by "
                              "running its code, which is refused; expected openai/clip-vit-large-patch14's "
                              "model.safetensors or an OpenAI / open_clip state dict")
    return path, read_weight_file(path)


def load_vision_model(path: str | Path, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> CLIPVisionModelWithProjection:
    """A CLIP weight file (.safetensors / .bin / .pt state dict, either layout) or a folder holding one."""
    path, sd = read_clip_file(path)
    sd = vision_weights(sd)
    return build_vision_model(detect_config(sd, str(path)), sd, device, dtype, str(path))


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """OpenAI CLIP's geometry: bicubic resize of the short side to `size`, then the centred size x size square."""
    image = image.convert("RGB")
    width, height = image.size
    long = int(size * max(width, height) / min(width, height))  # torchvision Resize(size) on the short side
    resized = image.resize((size, long) if width <= height else (long, size), Image.BICUBIC)
    left = int(round((resized.width - size) / 2.0))
    top = int(round((resized.height - size) / 2.0))
    return resized.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """OpenAI CLIP's transform: `center_crop`, [0, 1], normalise."""
    pixels = np.asarray(center_crop(image, size), dtype=np.float32) / 255
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    return (tensor - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
