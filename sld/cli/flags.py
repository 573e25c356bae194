"""The `sld` command-line flags: each one sets exactly one key of the run configuration (sld/runconfig.py).

One table keeps flags and YAML consistent: `--steps 30` and `sampler.steps=30` set the same value, and error
messages name both spellings.
"""
from collections.abc import Callable
from dataclasses import dataclass

from sampling.builtins import BUILTINS
from sampling.schedule import SPACINGS
from sld.options import SAFETY_NAMES
from sld.safety import PRESET_VALUES

DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
PRESET_CHOICES = ("none", *SAFETY_NAMES)  # every safety setting: SLD presets, the negative-prompt baseline, SEGA
SLD_CHOICES = ("none", *PRESET_VALUES)  # what the SLD-only values (--sld-*) start from
BUILTIN_SAMPLERS = ", ".join(name for name, *_ in BUILTINS)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class Flag:
    name: str  # "--steps"
    key: str  # "sampler.steps"
    metavar: str
    help: str
    type: Callable[[str], object] = str
    choices: tuple[str, ...] = ()
    repeat: bool = False  # each use appends one item to the key's list


FLAGS = (
    Flag("--model", "model.path", "PATH", "'toy' (the shipped toy model, 64x64 shape scenes), 'tiny' (random "
         "weights, draws noise), a .safetensors/.ckpt file or a diffusers folder"),
    Flag("--prompt", "prompt.text", "TEXT", "the prompt"),
    Flag("--prompt-file", "prompt.file", "FILE", "UTF-8 text, one prompt per line (blank and # lines skipped)"),
    Flag("--negative", "prompt.negative", "TEXT", "negative prompt (replaces the unconditional prompt)"),
    Flag("--preset", "sld.preset", "NAME", "safety setting: none, an SLD preset, negative (the concept as negative "
         "prompt) or SEGA with the concept as its one 'away' edit", choices=PRESET_CHOICES),
    Flag("--concept", "sld.concept", "TEXT", "safety concept of SLD, SEGA or the negative baseline (default: the "
         "paper's)"),
    Flag("--sld-guidance-scale", "sld.guidance_scale", "S_S", "SLD guidance scale s_S", float),
    Flag("--sld-threshold", "sld.threshold", "LAMBDA", "SLD threshold lambda", float),
    Flag("--sld-warmup-steps", "sld.warmup_steps", "DELTA", "SLD warm-up delta (model evaluations)", int),
    Flag("--sld-momentum-scale", "sld.momentum_scale", "S_M", "SLD momentum scale s_m", float),
    Flag("--sld-momentum-beta", "sld.momentum_beta", "BETA_M", "SLD momentum beta_m", float),
    Flag("--settings", "compare.settings", "LIST", "comma-separated grid columns: none, a safety setting (as "
         "--preset), or SLD_PRESET:key=value[:key=value] (keys: guidance_scale, threshold, warmup_steps, "
         "momentum_scale, momentum_beta)", comma_list),
    Flag("--sampler", "sampler.name", "NAME", f"a registered sampler: {BUILTIN_SAMPLERS}, or one an installed or "
         "--plugin module registers"),
    Flag("--hook", "hooks.names", "NAME", "a registered guidance hook, built with no arguments (or hooks.args.NAME) "
         "and applied after the safety hook; repeat for several, in order", repeat=True),
    Flag("--plugin", "plugins", "MODULE", "import this module first (the current folder is on the path) so its "
         "@register_sampler / @register_hook run; repeat for several", repeat=True),
    Flag("--spacing", "sampler.spacing", "NAME", "timestep spacing (default: the sampler's)", choices=SPACINGS),
    Flag("--steps", "sampler.steps", "N", "sampling steps", int),
    Flag("--cfg", "sampler.cfg", "SCALE", "classifier-free guidance scale", float),
    Flag("--seed", "sampler.seed", "N", "seed of the first image; image k of a run uses seed + k", int),
    Flag("--n", "image.n", "N", "images per prompt (compare: rows, one seed each)", int),
    Flag("--height", "image.height", "PX", "image height, a multiple of 8 (default: the model's native size)",
         int),
    Flag("--width", "image.width", "PX", "image width, a multiple of 8 (default: the model's native size)", int),
    Flag("--dtype", "model.dtype", "NAME", "dtype to compute in", choices=DTYPE_NAMES),
    Flag("--device", "model.device", "NAME", "torch device: cpu, cuda, cuda:1, mps"),
    Flag("--out", "out", "DIR", "output directory"),
)

FLAG_BY_NAME = {flag.name: flag for flag in FLAGS}
FLAG_BY_KEY = {flag.key: flag for flag in FLAGS}
_COMMON = ("--model", "--prompt", "--negative", "--concept", "--sampler", "--spacing", "--steps", "--cfg", "--seed",
           "--n", "--height", "--width", "--dtype", "--device", "--out", "--hook", "--plugin")
_GENERATE = _COMMON + ("--prompt-file", "--preset", "--sld-guidance-scale", "--sld-threshold", "--sld-warmup-steps",
                       "--sld-momentum-scale", "--sld-momentum-beta")
COMMAND_FLAGS = {"generate": _GENERATE, "compare": _COMMON + ("--settings",), "sweep": _GENERATE}


def describe(key: str) -> str:
    """How a user sets `key`: "--steps (sampler.steps)", or the key alone when no flag sets it."""
    flag = FLAG_BY_KEY.get(key)
    return f"{flag.name} ({key})" if flag else key
