"""Model identity for image records: file name and short hash (sha256, first 10 hex digits, as AUTOMATIC1111).

A single file hashes its bytes; a diffusers folder hashes the weight files the loader reads (relative path and
bytes of each). Full hashes are cached in $XDG_CACHE_HOME/sld/model_hashes.json (default ~/.cache), keyed by the
absolute path and valid while every hashed file keeps its size and modification time.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from models.diffusers_keys import PART_CONVERTERS, weight_file
from sld.api import TINY, TOY, checkpoint_path
from sld.io.files import write_atomic
from sld.settings import ModelSection, embedding_specs, lora_specs

SHORT_HASH = 10
CHUNK = 1 << 24
TINY_ID_HASH = "tiny"  # the in-memory random model has no file; its weights are fixed by seed 0


@dataclass(frozen=True)
class ModelId:
    name: str
    hash: str
    loras: tuple[dict, ...] = ()  # {"name", "hash", "scale"} per LoRA, in the order they are merged
    embeddings: tuple[dict, ...] = ()  # {"name", "hash", "token"} per textual-inversion file

    def adapter_fields(self) -> dict:
        """The adapters as a record lists them: only the kinds a model has, so plain models keep their records."""
        return {key: list(value) for key, value in (("loras", self.loras), ("embeddings", self.embeddings)) if value}


def _weight_files(path: Path) -> list[Path]:
    """The files whose bytes define the model: the file itself, or per diffusers part the file the loader picks."""
    if not path.is_dir():
        return [path]
    return [file for part in PART_CONVERTERS if (file := weight_file(path / part)) is not None]


def _signature(files: list[Path], root: Path) -> list:
    return [[str(file.relative_to(root) if file != root else file.name), file.stat().st_size, file.stat().st_mtime_ns]
            for file in files]


def _sha256(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        if root.is_dir():
            digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sld" / "model_hashes.json"


def _read_cache(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: Path, entries: dict) -> None:
    """Best effort and atomic: a cache that cannot be written only costs hashing again next time."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, json.dumps(entries, indent=1))
    except OSError:
        pass


def full_hash(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file or of a diffusers folder's weight files, from the cache when still valid."""
    root = Path(path).resolve()
    files = _weight_files(root)
    signature = _signature(files, root)
    cache = _cache_file()
    entries = _read_cache(cache)
    entry = entries.get(str(root))
    if isinstance(entry, dict) and entry.get("signature") == signature:
        return entry["sha256"]
    digest = _sha256(files, root)
    entries[str(root)] = {"signature": signature, "sha256": digest}
    _write_cache(cache, entries)
    return digest


def model_id(path: str) -> ModelId:
    if path == TINY:
        return ModelId(TINY, TINY_ID_HASH)
    if path == TOY:
        return ModelId(TOY, full_hash(checkpoint_path(TOY))[:SHORT_HASH])
    return ModelId(Path(path).name, full_hash(path)[:SHORT_HASH])


def file_id(path: str) -> dict:
    return {"name": Path(path).name, "hash": full_hash(path)[:SHORT_HASH]}


def model_id_of(section: ModelSection) -> ModelId:
    """The model of a run's model section with every adapter file it applies (name, short hash, scale or token)."""
    base = model_id(section.path)
    loras = tuple({**file_id(spec.path), "scale": spec.scale} for spec in lora_specs(section))
    embeddings = tuple({**file_id(spec.path), "token": spec.word} for spec in embedding_specs(section))
    return ModelId(base.name, base.hash, loras, embeddings)
