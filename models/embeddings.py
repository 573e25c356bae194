"""Textual-inversion embeddings: k learned vectors that a new prompt word stands for, k token positions.

Files: A1111 `.pt` (`string_to_param: {"*": [k, width]}`, read with the safe unpickler of models/checkpoint.py),
A1111 `.safetensors` (`emb_params`), and diffusers' `learned_embeds` (one entry, `{"<token>": [width] or [k, width]}`).
The prompt word is the file stem unless one is given (the A1111 convention, `EmbeddingSpec.word`).
`check_embedding` reads and checks a file before anything changes; `add_embeddings` appends the vectors as new rows
of the text tower's token table and returns each word's ids, which the tokenizer (models/tokenizer.py,
`added_tokens`) puts where the word appears.
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
EXPECTED = ("an A1111 .pt file (string_to_param), an A1111 .safetensors file (emb_params) or a diffusers "
            "learned_embeds file (one tensor)")


@dataclass(frozen=True)
class Embedding:
    token: str
    vectors: torch.Tensor  # [k, width]


def _vectors(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise AdapterError(f"{path}: no such file; expected {EXPECTED}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        loaded = read_pickle(path)
        if isinstance(loaded, dict) and isinstance(loaded.get(A1111_PICKLE_KEY), dict):
            loaded = loaded[A1111_PICKLE_KEY]
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)} if isinstance(loaded, dict) else {}
    else:
        tensors = read_weight_file(path)
    if A1111_SAFETENSORS_KEY in tensors:
        tensors = {A1111_SAFETENSORS_KEY: tensors[A1111_SAFETENSORS_KEY]}
    if len(tensors) != 1:
        raise AdapterError(f"{path}: found tensors {sorted(tensors) or 'none'}; expected {EXPECTED}")
    vectors = next(iter(tensors.values()))
    return vectors[None] if vectors.ndim == 1 else vectors


def check_embedding(path: str, token: str, width: int, tokenizer: CLIPTokenizer, taken: set[str]) -> Embedding:
    """The file's vectors and its word `token`; a width other than the text tower's, or a word the tokenizer (or an
    earlier embedding in `taken`) already knows, raises one AdapterError."""
    path = Path(path)
    vectors = _vectors(path)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] != width:
        raise AdapterError(f"{path}: embedding of shape {tuple(vectors.shape)}; the text tower needs [k, {width}] "
                           f"(k >= 1 vectors of its width {width})")
    if not token or token != token.strip() or len(token.split()) != 1:
        raise AdapterError(f"{path}: embedding token {token!r} must be one word without spaces")
    if tokenizer.knows(token) or token.lower() in taken:
        raise AdapterError(f"{path}: embedding token {token!r} is already a word of the tokenizer"
                           f"{' or of another embedding' if token.lower() in taken else ''}; give another one "
                           "(path:TOKEN on the command line, (path, token) in sld.load)")
    return Embedding(token, vectors)


@torch.no_grad()
def add_embeddings(table: nn.Embedding, embeddings: list[Embedding]) -> dict[str, tuple[int, ...]]:
    """Append each embedding's vectors to the token table (a new weight, cast to the table's dtype and device);
    -> word -> its ids."""
    ids, rows, start = {}, [], table.weight.shape[0]
    for embedding in embeddings:
        ids[embedding.token] = tuple(range(start, start + len(embedding.vectors)))
        rows.append(embedding.vectors.to(device=table.weight.device, dtype=table.weight.dtype))
        start += len(embedding.vectors)
    if rows:
        table.weight = nn.Parameter(torch.cat([table.weight, *rows]), requires_grad=False)
        table.num_embeddings = table.weight.shape[0]
    return ids
