"""Generation records embedded in PNG files, written atomically.

Every PNG carries two text chunks, and a sweep's images a third:
    parameters     the AUTOMATIC1111 form that Stable Diffusion image tools read (sld/io/infotext.py):
                   "<prompt>\\nNegative prompt: <negative>\\nSteps: 30, Sampler: PLMS, CFG scale: 7.5, Seed: 1,
                   Size: 512x512, Model hash: 1a2b3c4d5e, Model: v1-5-pruned-emaonly, ..."
    sld            JSON of the full record: every generation argument, the exact safety setting, hooks, model, version.
    sld_telemetry  JSON of the pipeline's telemetry (one entry per model evaluation); not part of the record.
A file is written atomically (sld/io/files.py), so an interrupted run never leaves a partial file; a finished file
whose record matches is not recomputed.
"""
import hashlib
import io
import json
import os
import re
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sld import __version__
from sld.io.files import write_atomic
from sld.io.infotext import parameters_text
from sld.io.model_id import ModelId
from sld.settings import ModelSection, SamplerSection

RECORD_KEY = "sld"
PARAMETERS_KEY = "parameters"
TELEMETRY_KEY = "sld_telemetry"
SLUG_LENGTH = 40
DIGEST_LENGTH = 8


def generation_record(*, model: ModelSection, model_id: ModelId, family: str, prediction: str, sampler: SamplerSection,
                      spacing: str, timesteps: list[float], height: int, width: int, negative_prompt: str | None,
                      hooks: list[dict], micro_conditioning: dict[str, tuple[int, int]] | None = None) -> dict:
    """What every image of a run shares; image and grid records add prompt, seed and the safety setting. SDXL
    records also carry the micro-conditioning (original_size, crops_coords_top_left, target_size)."""
    micro = {} if micro_conditioning is None else {"micro_conditioning": {k: list(v) for k, v in micro_conditioning.items()}}
    return micro | {
        "version": __version__,
        "model": {"name": model_id.name, "hash": model_id.hash, "family": family, "prediction": prediction,
                  "ema": model.ema, **model_id.adapter_fields()},
        "dtype": model.dtype,
        "device": model.device,
        "negative_prompt": negative_prompt,
        "sampler": sampler.name,
        "spacing": spacing,
        "karras": sampler.karras,
        "steps": sampler.steps,
        "timesteps": list(timesteps),
        "eta": sampler.eta,
        "cfg_scale": sampler.cfg,
        "height": height,
        "width": width,
        "base_seed": sampler.seed,
        "hooks": hooks,
    }


def canonical(record: dict) -> dict:
    """The record as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(record))


def record_digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:DIGEST_LENGTH]


def slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:SLUG_LENGTH].strip("-") or "image"


def image_name(record: dict) -> str:
    """`<prompt index>-<image index>-<prompt slug>-<record digest>.png`: different settings never share a name."""
    return f"{record['prompt_index']:05d}-{record['image_index']:02d}-{slug(record['prompt'])}-{record_digest(record)}.png"


def grid_name(record: dict) -> str:
    return f"compare-{slug(record['prompt'])}-{record_digest(record)}.png"


def sheet_name(record: dict) -> str:
    """`sheet-<prompt index>-<prompt slug>.png`: one contact sheet per prompt of a sweep, replaced when it changes."""
    return f"sheet-{record['prompt_index']:05d}-{slug(record['prompt'])}.png"


def _json_value(value):
    """Telemetry values a hook may report as tensors or numpy scalars, as JSON numbers or lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def save_png(image: Image.Image, path: Path, record: dict, telemetry: list[dict] | None = None) -> None:
    """Write image + record (+ telemetry) to a temporary file beside `path`, then rename it into place."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_text(record))
    info.add_text(RECORD_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    if telemetry is not None:
        info.add_text(TELEMETRY_KEY, json.dumps(telemetry, ensure_ascii=False, default=_json_value))
    encoded = io.BytesIO()
    image.save(encoded, format="PNG", pnginfo=info)
    write_atomic(path, encoded.getvalue())


def _read_text(path: str | os.PathLike, key: str):
    try:
        with Image.open(path) as image:
            image.load()
            text = image.text.get(key)
        return json.loads(text) if text is not None else None
    except (OSError, ValueError, SyntaxError):  # PIL reports broken files with these
        return None


def read_record(path: str | os.PathLike) -> dict | None:
    """The `sld` record of a complete PNG; None when the file is missing, truncated or carries no record."""
    return _read_text(path, RECORD_KEY)


def read_telemetry(path: str | os.PathLike) -> list[dict] | None:
    """The telemetry a sweep stored in a PNG; None when the file is missing, truncated or carries none."""
    return _read_text(path, TELEMETRY_KEY)


def is_done(path: Path, record: dict) -> bool:
    return path.is_file() and read_record(path) == canonical(record)
