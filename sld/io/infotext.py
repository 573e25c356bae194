"""The AUTOMATIC1111 `parameters` text of a record (sld/io/records.py), which Stable Diffusion image tools read:

    <prompt>
    Negative prompt: <negative>
    Steps: 30, Sampler: PLMS, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: 1a2b3c4d5e, Model: v1-5, ...

then the safety setting exactly: `SLD: strong, s_S=2000.0, ...`; `SEGA: sega-max, s_m=0.5, beta_m=0.4` with one
`SEGA edit k: away, s_e=10.0, ...` per edit concept; or `Safety: negative prompt` (the concept is the negative
prompt line). A concept other than the paper's is written out; registered hooks follow as `Hooks: ...`.
"""
import json
from pathlib import Path

from sld.hooks.safety import DEFAULT_CONCEPT, SLD_VALUES

# our name -> the name AUTOMATIC1111 gives the same sampler
A1111_SAMPLERS = {"pndm": "PLMS", "ddim": "DDIM", "ddpm": "DDPM", "euler": "Euler", "euler_a": "Euler a", "heun": "Heun",
                  "lms": "LMS", "dpmpp_2m": "DPM++ 2M"}
SLD_SYMBOLS = {"guidance_scale": "s_S", "threshold": "lambda", "warmup_steps": "delta", "momentum_scale": "s_m",
               "momentum_beta": "beta_m"}
EDIT_SYMBOLS = {"scale": "s_e", "warmup_steps": "warm-up", "cooldown_steps": "cooldown", "threshold": "threshold",
                "weight": "weight"}


def _quote(value) -> str:
    # AUTOMATIC1111 infotext quoting: values holding a comma, colon or newline are JSON strings
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _sld_fields(safety: dict) -> dict:
    fields = {"SLD": ", ".join([safety["preset"]] + [f"{SLD_SYMBOLS[key]}={safety[key]}" for key in SLD_VALUES])}
    if safety["concept"] != DEFAULT_CONCEPT:
        fields["SLD concept"] = safety["concept"]
    return fields


def _sega_fields(safety: dict) -> dict:
    fields = {"SEGA": f"{safety['preset']}, s_m={safety['momentum_scale']}, beta_m={safety['momentum_beta']}"}
    for number, edit in enumerate(safety["edits"], start=1):
        values = [f"{symbol}={'none' if edit[key] is None else edit[key]}" for key, symbol in EDIT_SYMBOLS.items()]
        fields[f"SEGA edit {number}"] = ", ".join([edit["direction"], *values])
        if edit["text"] != DEFAULT_CONCEPT:
            fields[f"SEGA edit {number} concept"] = edit["text"]
    return fields


def safety_infotext(safety: dict | None) -> dict:
    """The infotext fields of an image's safety record (sld.hooks.resolve.Safety.record)."""
    if safety is None:
        return {"SLD": "none"}
    if safety["method"] == "negative":
        return {"Safety": "negative prompt"}
    return _sega_fields(safety) if safety["method"] == "sega" else _sld_fields(safety)


def adapter_infotext(model: dict) -> dict:
    """AUTOMATIC1111's `Lora hashes` and `TI hashes` ("name: hash, ..."), and the scales, which A1111 writes into the
    prompt as <lora:name:scale>, as `Lora scales`."""
    fields = {}
    if model.get("loras"):
        fields["Lora hashes"] = ", ".join(f"{Path(lora['name']).stem}: {lora['hash']}" for lora in model["loras"])
        fields["Lora scales"] = ", ".join(f"{Path(lora['name']).stem}: {lora['scale']}" for lora in model["loras"])
    if model.get("embeddings"):
        fields["TI hashes"] = ", ".join(f"{item['token']}: {item['hash']}" for item in model["embeddings"])
    return fields


def _hook_text(hook: dict) -> str:
    args = ", ".join(f"{key}={value}" for key, value in hook["args"].items())
    return f"{hook['name']}({args})" if args else hook["name"]


def _sweep_text(record: dict) -> str:
    fields = {"Sweep": " | ".join(row["label"] for row in record["rows"]),
              "Seeds": " ".join(map(str, record["seeds"])), "Version": f"sld {record['version']}"}
    return "\n".join([record["prompt"], ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items())])


def parameters_text(record: dict) -> str:
    """The AUTOMATIC1111 `parameters` text of an image, compare-grid or sweep-sheet record."""
    if "rows" in record:
        return _sweep_text(record)
    lines = [record["prompt"]]
    if record["negative_prompt"]:
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    fields = {"Steps": record["steps"], "Sampler": A1111_SAMPLERS.get(record["sampler"], record["sampler"]),
              "CFG scale": record["cfg_scale"], "Seed": record["seed"], "Size": f"{record['width']}x{record['height']}",
              "Model hash": record["model"]["hash"], "Model": Path(record["model"]["name"]).stem,
              **adapter_infotext(record["model"])}
    if record["karras"]:
        fields["Schedule type"] = "Karras"
    if record["eta"]:
        fields["Eta"] = record["eta"]
    fields["Spacing"] = record["spacing"]
    if "cells" in record:
        fields["SLD grid"] = " | ".join(cell["label"] for cell in record["cells"])
    else:
        fields.update(safety_infotext(record["safety"]))
    if record.get("hooks"):
        fields["Hooks"] = " ".join(_hook_text(hook) for hook in record["hooks"])
    fields["Version"] = f"sld {record['version']}"
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)
