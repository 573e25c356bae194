"""CLIP score (Hessel et al. 2021, with the weight 100 that torchmetrics and text-to-image papers use): how well an
image matches its caption, per image

    score = 100 * max(cos(encode_image(image), encode_text(caption)), 0)

with the project's own CLIP towers (sld/eval/clip_vision.py, sld/eval/clip_text.py) and OpenAI CLIP's image
transform (bicubic resize of the short side, centre crop, CLIP's mean and std). The user gives the weights: a
transformers CLIP folder (e.g. openai/clip-vit-large-patch14) or an OpenAI / open_clip state dict file.
"""
import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image

from models.checkpoint import CheckpointError
from models.clip import ACTIVATIONS
from models.tokenizer import CLIPTokenizer
from sld.eval.clip_text import CLIPTextModelWithProjection, build_text_model, detect_text_config, text_weights
from sld.eval.clip_vision import (CLIPVisionModelWithProjection, build_vision_model, detect_config, preprocess,
                                  read_clip_file, vision_weights)

WEIGHT_FORMATS = ("a transformers CLIP folder (e.g. openai/clip-vit-large-patch14) or an OpenAI / open_clip CLIP "
                  "state dict (.safetensors, .bin, .pt)")


def folder_activations(path: Path) -> tuple[str, str]:
    """(text, image) tower activations from a transformers folder's config.json; OpenAI CLIP's quick GELU when the
    folder has none (OpenAI files do not say: every OpenAI CLIP model uses it)."""
    config_file = path / "config.json"
    if not (path.is_dir() and config_file.is_file()):
        return "quick_gelu", "quick_gelu"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        found = tuple(config.get(f"{tower}_config", {}).get("hidden_act", "quick_gelu") for tower in ("text", "vision"))
    except (OSError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{config_file}: not a readable transformers CLIP config ({error})") from None
    unknown = [name for name in found if name not in ACTIVATIONS]
    if unknown:
        raise CheckpointError(f"{config_file}: activation {unknown[0]!r} is not supported; allowed: "
                              f"{', '.join(ACTIVATIONS)}")
    return found


def load_clip(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
              ) -> tuple[CLIPVisionModelWithProjection, CLIPTextModelWithProjection]:
    """Both towers of one CLIP model from a transformers folder or a weight file (either key layout)."""
    text_activation, image_activation = folder_activations(Path(path))
    file, sd = read_clip_file(path)
    image_sd, text_sd = vision_weights(sd), text_weights(sd)
    image_cfg = dataclasses.replace(detect_config(image_sd, str(file)), activation=image_activation)
    text_cfg = detect_text_config(text_sd, str(file), text_activation)
    image_tower = build_vision_model(image_cfg, image_sd, device, dtype, str(file))
    text_tower = build_text_model(text_cfg, text_sd, device, dtype, str(file))
    if text_tower.text_projection.out_features != image_cfg.projection_dim:
        raise CheckpointError(f"{file}: the text tower projects to {text_tower.text_projection.out_features} and the "
                              f"image tower to {image_cfg.projection_dim}; expected one CLIP model's two towers")
    return image_tower, text_tower


def clip_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Row-wise 100 * max(cos(image_i, text_i), 0) (torchmetrics' `clip_score` before its mean)."""
    image_embeddings = image_embeddings / image_embeddings.norm(dim=-1, keepdim=True)
    text_embeddings = text_embeddings / text_embeddings.norm(dim=-1, keepdim=True)
    return 100 * (image_embeddings * text_embeddings).sum(dim=-1).clamp(min=0)


class CLIPScorer:
    """The CLIP score of image files against their captions; tokenised with the CLIP BPE that every OpenAI CLIP
    model shares (captions longer than the context are cut, with a warning)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if not Path(path).exists():
            raise ValueError(f"CLIP weights {str(path)!r}: no such file or folder; allowed: {WEIGHT_FORMATS}")
        self.device = torch.device(device)
        self.image_tower, self.text_tower = load_clip(path, self.device, dtype)
        self.tokenizer = CLIPTokenizer(max_length=self.text_tower.cfg.max_length)
        if self.text_tower.cfg.vocab_size != self.tokenizer.vocab_size:
            raise CheckpointError(f"{path}: a text vocabulary of {self.text_tower.cfg.vocab_size} tokens; expected "
                                  f"OpenAI CLIP's {self.tokenizer.vocab_size}")

    @torch.inference_mode()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([preprocess(image, self.image_tower.cfg.image_size) for image in images])
        return self.image_tower(pixels.to(self.device))

    @torch.inference_mode()
    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        return self.text_tower(self.tokenizer(captions).to(self.device))

    def scores(self, paths: list[Path], captions: list[str]) -> list[float]:
        """One score per (image file, caption) pair."""
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        scores = clip_scores(self.image_embeddings(images), self.text_embeddings(captions))
        return [float(score) for score in scores.double().cpu()]
