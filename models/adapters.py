"""LoRAs and textual-inversion embeddings applied at load: every file is read and checked against the model's shapes
(`check_adapters`) before any weight changes (`apply_adapters`), so a bad file never leaves a model changed in part.
Several LoRAs add up in the order given; embeddings take new rows of each text tower's token table."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.adapter_keys import adapter_targets
from models.config import ModelConfig
from models.embeddings import Embedding, add_embeddings, check_embedding
from models.lora import LoraLayer, check_lora, merge_lora
from models.tokenizer import CLIPTokenizer


@dataclass(frozen=True)
class LoraSpec:
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class EmbeddingSpec:
    path: str
    token: str | None = None  # None: the file stem

    @property
    def word(self) -> str:
        """The prompt word: the token given, else the file stem (the A1111 convention)."""
        return Path(self.path).stem if self.token is None else self.token


def _is_path(value) -> bool:
    return isinstance(value, str) or hasattr(value, "__fspath__")


def _path_and(item, second) -> tuple:
    """(path, second) from a path or a 2-sequence; anything else -> (None, None)."""
    if isinstance(item, (tuple, list)):
        return tuple(item) if len(item) == 2 else (None, None)
    return item, second


def lora_spec(item) -> LoraSpec:
    """A path, a (path, scale) pair or a LoraSpec -> LoraSpec."""
    if isinstance(item, LoraSpec):
        return item
    path, scale = _path_and(item, 1.0)
    if not _is_path(path) or isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"loras: {item!r} is not allowed; give a path or a (path, scale) pair with a number scale")
    return LoraSpec(str(path), float(scale))


def embedding_spec(item) -> EmbeddingSpec:
    """A path, a (path, token) pair or an EmbeddingSpec -> EmbeddingSpec."""
    if isinstance(item, EmbeddingSpec):
        return item
    path, token = _path_and(item, None)
    paired = isinstance(item, (tuple, list))
    if not _is_path(path) or not (isinstance(token, str) if paired else token is None):
        raise ValueError(f"embeddings: {item!r} is not allowed; give a path or a (path, token) pair with a str token")
    return EmbeddingSpec(str(path), token)


@dataclass(frozen=True)
class CheckedAdapters:
    loras: list[LoraLayer]
    embeddings: list[Embedding]


def check_adapters(cfg: ModelConfig, shapes: dict[str, torch.Size], loras: Iterable[LoraSpec] = (),
                   embeddings: Iterable[EmbeddingSpec] = ()) -> CheckedAdapters:
    """Every file read and checked against the model of `cfg` with weights of `shapes`; the first bad file raises."""
    loras, embeddings = list(loras), list(embeddings)
    towers = [text for text in (cfg.text, cfg.text2) if text is not None]
    if embeddings and len({text.vocab_size for text in towers}) != 1:
        sizes = ", ".join(str(text.vocab_size) for text in towers)
        raise ValueError(f"textual-inversion embeddings need text towers of one vocabulary size (the new words take "
                         f"the same ids in each); this {cfg.family} model has {sizes}")
    targets = adapter_targets(cfg, shapes) if loras else {}
    layers = [layer for spec in loras for layer in check_lora(spec.path, spec.scale, targets, shapes)]
    tokenizer, checked = CLIPTokenizer(), []
    for spec in embeddings:
        taken = {embedding.token.lower() for embedding in checked}
        checked.append(check_embedding(spec.path, spec.word, tuple(text.width for text in towers), tokenizer, taken))
    return CheckedAdapters(layers, checked)


def apply_adapters(model, adapters: CheckedAdapters) -> None:
    """Merge the LoRAs into `model` (a StableDiffusion) and give its text towers and tokenizers the embeddings' words."""
    merge_lora(model, adapters.loras)
    if not adapters.embeddings:
        return
    encoder = model.text_encoder
    towers = encoder.embedders if model.cfg.text2 is not None else [encoder]  # SDXL: CLIP ViT-L, OpenCLIP ViT-bigG
    # every table has the same size (check_adapters), so a word's ids are the same in each
    ids = [add_embeddings(tower.token_embedding, adapters.embeddings, index) for index, tower in enumerate(towers)]
    model.added_tokens.update(ids[0])
