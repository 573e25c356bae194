"""Textual-inversion embeddings: k learned vectors that a new prompt word stands for, k token positions.

Files: A1111 `.pt` (`string_to_param: {"*": [k, width]}`, read with the safe unpickler of models/checkpoint.py),
A1111 `.safetensors` (`emb_params`), and diffusers' `learned_embeds` (one entry, `{"<token>": [width] or [k, width]}`).
SDXL's A1111/kohya files hold one tensor per text tower, `clip_l` [k, 768] and `clip_g` [k, 1280], k the same.
The prompt word is the file stem unless one is given (the A1111 convention, `EmbeddingSpec.word`).
`check_embedding` reads and checks a file before anything changes; `add_embeddings` appends the vectors as new rows
of a text tower's token table and returns each word's ids, which the tokenizer (models/tokenizer.py,
`added_tokens`) puts where the word appears (on SDXL both tables grow alike, so the ids are the same in both).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import PICKLE_SUFFIXES, read_pickle, read_weight_file
from models.lora import AdapterError
from models.tokenizer import CLIPTokenizer

A1111_PICKLE_KEY = "string_to_param"
A1111_SAFETENSORS_KEY = "emb_params"
SDXL_KEYS = ("clip_l", "clip_g")  # one tensor per text tower, in the towers' order
EXPECTED = ("an A1111 .pt file (string_to_param), an A1111 .safetensors file (emb_params) or a diffusers "
            "learned_embeds file (one tensor)")
EXPECTED_SDXL = "an SDXL embedding file with clip_l and clip_g tensors (one per text tower)"


@dataclass(frozen=True)
class Embedding:
    token: str
    vectors: tuple[torch.Tensor, ...]  # one [k, width] per text tower


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AdapterError(f"{path}: no such file; expected {EXPECTED}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        loaded = read_pickle(path)
        if isinstance(loaded, dict) and isinstance(loaded.get(A1111_PICKLE_KEY), dict):
            loaded = loaded[A1111_PICKLE_KEY]
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)} if isinstance(loaded, dict) else {}
    else:
        tensors = read_weight_file(path)
    return tensors


def _vectors(path: Path, towers: int) -> tuple[torch.Tensor, ...]:
    """One [k, width] tensor per text tower: the file's one tensor, or SDXL's clip_l and clip_g."""
    tensors = _tensors(path)
    if towers == len(SDXL_KEYS):
        if not set(SDXL_KEYS) <= set(tensors):
            raise AdapterError(f"{path}: found tensors {sorted(tensors) or 'none'}; expected {EXPECTED_SDXL}")
        chosen = [tensors[key] for key in SDXL_KEYS]
    else:
        if A1111_SAFETENSORS_KEY in tensors:
            tensors = {A1111_SAFETENSORS_KEY: tensors[A1111_SAFETENSORS_KEY]}
        if len(tensors) != 1:
            raise AdapterError(f"{path}: found tensors {sorted(tensors) or 'none'}; expected {EXPECTED}")
        chosen = list(tensors.values())
    return tuple(vectors[None] if vectors.ndim == 1 else vectors for vectors in chosen)


def check_embedding(path: str, token: str, widths: tuple[int, ...], tokenizer: CLIPTokenizer, taken: set[str]
                    ) -> Embedding:
    """The file's vectors for each text tower (of `widths`) and its word `token`; a width other than a tower's,
    towers given different vector counts, or a word the tokenizer (or an earlier embedding in `taken`) already knows,
    raises one AdapterError."""
    path = Path(path)
    vectors = _vectors(path, len(widths))
    for index, (tower, width) in enumerate(zip(vectors, widths)):
        if tower.ndim != 2 or tower.shape[0] < 1 or tower.shape[1] != width:
            name = f"{SDXL_KEYS[index]} " if len(widths) > 1 else ""
            raise AdapterError(f"{path}: {name}embedding of shape {tuple(tower.shape)}; the text tower needs "
                               f"[k, {width}] (k >= 1 vectors of its width {width})")
    if len({tower.shape[0] for tower in vectors}) != 1:
        counts = ", ".join(f"{key} {tower.shape[0]}" for key, tower in zip(SDXL_KEYS, vectors))
        raise AdapterError(f"{path}: the text towers get different numbers of vectors ({counts}); allowed: the same k")
    if not token or token != token.strip() or len(token.split()) != 1:
        raise AdapterError(f"{path}: embedding token {token!r} must be one word without spaces")
    if tokenizer.knows(token) or token.lower() in taken:
        raise AdapterError(f"{path}: embedding token {token!r} is already a word of the tokenizer"
                           f"{' or of another embedding' if token.lower() in taken else ''}; give another one "
                           "(path:TOKEN on the command line, (path, token) in sld.load)")
    return Embedding(token, vectors)


@torch.no_grad()
def add_embeddings(table: nn.Embedding, embeddings: list[Embedding], tower: int = 0) -> dict[str, tuple[int, ...]]:
    """Append each embedding's vectors for text tower `tower` to its token table (a new weight, cast to the table's
    dtype and device); -> word -> its ids."""
    ids, rows, start = {}, [], table.weight.shape[0]
    for embedding in embeddings:
        vectors = embedding.vectors[tower]
        ids[embedding.token] = tuple(range(start, start + len(vectors)))
        rows.append(vectors.to(device=table.weight.device, dtype=table.weight.dtype))
        start += len(vectors)
    if rows:
        table.weight = nn.Parameter(torch.cat([table.weight, *rows]), requires_grad=False)
        table.num_embeddings = table.weight.shape[0]
    return ids
