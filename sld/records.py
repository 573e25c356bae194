"""Generation records embedded in PNG files, written atomically.

Every PNG carries two text chunks:
    parameters  the AUTOMATIC1111 form that Stable Diffusion image tools read:
                "<prompt>\\nNegative prompt: <negative>\\nSteps: 30, Sampler: PLMS, CFG scale: 7.5, Seed: 1, Size: 512x512,
                Model hash: 1a2b3c4d5e, Model: v1-5-pruned-emaonly, ..."
    sld         JSON of the full record: every generation argument, the exact SLD settings, model, version.
A file is written to a hidden temporary name in the same folder and renamed into place (os.replace), so an
interrupted run never leaves a partial PNG; a finished file whose record matches is not recomputed.
"""
import hashlib
import json
import os
import re
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sld import __version__
from sld.model_id import ModelId
from sld.runconfig import SLD_VALUES, RunConfig
from sld.safety import DEFAULT_CONCEPT, SLD

RECORD_KEY = "sld"
PARAMETERS_KEY = "parameters"
# our name -> the name AUTOMATIC1111 gives the same sampler
A1111_SAMPLERS = {"pndm": "PLMS", "ddim": "DDIM", "ddpm": "DDPM", "euler": "Euler", "euler_a": "Euler a", "heun": "Heun",
                  "lms": "LMS", "dpmpp_2m": "DPM++ 2M"}
SLD_SYMBOLS = {"guidance_scale": "s_S", "threshold": "lambda", "warmup_steps": "delta", "momentum_scale": "s_m",
               "momentum_beta": "beta_m"}
SLUG_LENGTH = 40
DIGEST_LENGTH = 8


def safety_record(hook: SLD | None, preset: str) -> dict | None:
    """The exact SLD settings (None without SLD); `preset` names the configuration the values started from."""
    if hook is None:
        return None
    return {"preset": preset, **{key: getattr(hook, key) for key in SLD_VALUES}, "concept": hook.concept,
            "space": hook.space}


def generation_record(run: RunConfig, model: ModelId, family: str, prediction: str, spacing: str,
                      schedule: list[float], height: int, width: int) -> dict:
    """What every image of a run shares; image and grid records add prompt, seed and SLD settings."""
    return {
        "version": __version__,
        "model": {"name": model.name, "hash": model.hash, "family": family, "prediction": prediction,
                  "ema": run.model.ema},
        "dtype": run.model.dtype,
        "device": run.model.device,
        "negative_prompt": run.prompt.negative,
        "sampler": run.sampler.name,
        "spacing": spacing,
        "karras": run.sampler.karras,
        "steps": run.sampler.steps,
        "timesteps": list(schedule),
        "eta": run.sampler.eta,
        "cfg_scale": run.sampler.cfg,
        "height": height,
        "width": width,
        "base_seed": run.sampler.seed,
    }


def _quote(value) -> str:
    # AUTOMATIC1111 infotext quoting: values holding a comma, colon or newline are JSON strings
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _sld_summary(safety: dict | None) -> str:
    if safety is None:
        return "none"
    return ", ".join([safety["preset"]] + [f"{SLD_SYMBOLS[key]}={safety[key]}" for key in SLD_VALUES])


def parameters_text(record: dict) -> str:
    """The AUTOMATIC1111 `parameters` text of an image or grid record."""
    lines = [record["prompt"]]
    if record["negative_prompt"]:
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    fields = {"Steps": record["steps"], "Sampler": A1111_SAMPLERS.get(record["sampler"], record["sampler"]),
              "CFG scale": record["cfg_scale"], "Seed": record["seed"], "Size": f"{record['width']}x{record['height']}",
              "Model hash": record["model"]["hash"], "Model": Path(record["model"]["name"]).stem}
    if record["karras"]:
        fields["Schedule type"] = "Karras"
    if record["eta"]:
        fields["Eta"] = record["eta"]
    fields["Spacing"] = record["spacing"]
    if "cells" in record:
        fields["SLD grid"] = " | ".join(cell["label"] for cell in record["cells"])
    else:
        fields["SLD"] = _sld_summary(record["safety"])
        if record["safety"] and record["safety"]["concept"] != DEFAULT_CONCEPT:
            fields["SLD concept"] = record["safety"]["concept"]
    fields["Version"] = f"sld {record['version']}"
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)


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


def save_png(image: Image.Image, path: Path, record: dict) -> None:
    """Write image + record to a temporary file beside `path`, then rename it into place."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_text(record))
    info.add_text(RECORD_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=info)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:  # Ctrl-C included: never leave the temporary file behind
        temporary.unlink(missing_ok=True)
        raise


def read_record(path: str | os.PathLike) -> dict | None:
    """The `sld` record of a complete PNG; None when the file is missing, truncated or carries no record."""
    try:
        with Image.open(path) as image:
            image.load()
            text = image.text.get(RECORD_KEY)
        return json.loads(text) if text is not None else None
    except (OSError, ValueError, SyntaxError):  # PIL reports broken files with these
        return None


def is_done(path: Path, record: dict) -> bool:
    return path.is_file() and read_record(path) == canonical(record)
