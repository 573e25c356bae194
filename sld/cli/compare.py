"""`sld compare`: one prompt under SD (no safety) and safety settings side by side, one labelled grid PNG.

Columns are `compare.settings` entries: `none`, a safety setting (an SLD preset, `negative`, `sega-medium`,
`sega-strong`, `sega-max`), or `SLD_PRESET:key=value[:key=value]` with keys guidance_scale, threshold,
warmup_steps, momentum_scale, momentum_beta. Row j uses seed `sampler.seed + j`, so a cell equals `sld generate`
with that setting and seed.
"""
import sys
from dataclasses import dataclass

from tqdm import tqdm

from sld.cli.config import RunConfig, SLDSection, safety_setting
from sld.cli.session import generate_image, progress, start_session
from sld.hooks.resolve import NO_SAFETY, SAFETY_NAMES, SETTING_NAMES, Safety
from sld.hooks.safety import PRESET_VALUES, SLD_VALUES
from sld.io.files import prepare_output_dir
from sld.io.image_grid import labelled_grid
from sld.io.records import grid_name, is_done, save_png

SETTING_FORMAT = f"none, a safety setting ({', '.join(SAFETY_NAMES)}) or SLD_PRESET:key=value[:key=value] " \
                 f"with an SLD preset ({', '.join(PRESET_VALUES)}) and keys {', '.join(SLD_VALUES)}"


@dataclass(frozen=True)
class Setting:
    label: str  # the grid column's label
    safety: Safety


def _value(entry: str, item: str) -> tuple[str, float | int]:
    key, equals, text = item.partition("=")
    if not equals or key not in SLD_VALUES:
        raise ValueError(f"compare setting {entry!r}: {item!r} is not KEY=VALUE with a known key; "
                         f"allowed: {SETTING_FORMAT}")
    try:
        return key, int(text) if key == "warmup_steps" else float(text)
    except ValueError:
        kind = "an integer" if key == "warmup_steps" else "a number"
        raise ValueError(f"compare setting {entry!r}: {key}={text!r} is invalid; allowed: {kind}") from None


def parse_setting(entry: str, concept: str | None) -> Setting:
    """`none` | `strong` | `sega-max` | `negative` | `strong:threshold=0.02:warmup_steps=5`; the concept applies to
    every setting but none."""
    name, *items = entry.split(":")
    if name not in SETTING_NAMES or (name not in PRESET_VALUES and items):
        raise ValueError(f"compare setting {entry!r} is unknown; allowed: {SETTING_FORMAT}")
    if name == "none":
        return Setting("none", NO_SAFETY)
    values = dict(_value(entry, item) for item in items)
    return Setting(" ".join([name, *items]), safety_setting(SLDSection(preset=name, concept=concept, **values)))


def run_compare(run: RunConfig) -> int:
    if run.prompt.text is None or run.prompt.file is not None:
        raise ValueError("compare takes one prompt: give --prompt TEXT (prompt.text) and no prompt.file")
    settings = [parse_setting(entry, run.sld.concept) for entry in run.compare.settings]
    if not settings:
        raise ValueError(f"--settings (compare.settings) is empty; allowed: a comma-separated list of {SETTING_FORMAT}")
    if run.prompt.negative is not None and any(s.safety.negative_prompt is not None for s in settings):
        raise ValueError("compare setting 'negative' uses the concept as the negative prompt; allowed: no --negative "
                         "(prompt.negative) with it")
    out = prepare_output_dir(run.out)
    session = start_session(run)
    seeds = [run.sampler.seed + row for row in range(run.image.n)]
    record = {**session.record, "prompt": run.prompt.text, "seed": seeds[0], "seeds": seeds,
              "cells": [{"label": s.label, "safety": s.safety.record()} for s in settings]}
    path = out / grid_name(record)
    if is_done(path, record):
        print(f"sld: {path} already done", file=sys.stderr)
        return 0
    with progress(len(seeds) * len(settings) * session.steps_per_image, "compare") as bar:
        images = [generate_image(session, run.prompt.text, seed, setting.safety, bar)
                  for seed in seeds for setting in settings]
    save_png(labelled_grid(images, [s.label for s in settings], len(settings)), path, record)
    tqdm.write(str(path))
    return 0
