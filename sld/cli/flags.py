"""Every flag of the `sld` command, once: each sets exactly one key of a configuration (sld/cli/config.py), the run
configuration of generate, compare and sweep (FLAGS) or the I2P configuration of `sld i2p generate` (I2P_FLAGS).

One table keeps flags and YAML consistent: `--steps 30` and `sampler.steps=30` set the same value, and error
messages name both spellings (`describe`). A key both configurations have is set by the same flag in both.
"""
import argparse
from collections.abc import Callable
from dataclasses import dataclass

from sampling.builtins import BUILTINS
from sampling.registry import SAMPLERS
from sampling.schedule import SPACINGS
from sld.eval.config import STRATEGIES
from sld.eval.prompts import CATEGORIES
from sld.hooks.resolve import SETTING_NAMES
from sld.hooks.safety import PRESET_VALUES
from sld.settings import DTYPE_NAMES

SLD_CHOICES = ("none", *PRESET_VALUES)  # what the SLD-only values (--sld-*) start from
BUILTIN_SAMPLERS = ", ".join(name for name, *_ in BUILTINS)
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a yes/no value; allowed: true, false")
    return word in TRUE_WORDS


def pixel_pair(text: str) -> list[int]:
    """"HxW" (a size) -> [H, W]."""
    return _int_pair(text, "x", "HxW, e.g. 1024x1024")


def offset_pair(text: str) -> list[int]:
    """"Y,X" (a crop's top-left corner) -> [Y, X]."""
    return _int_pair(text, ",", "Y,X, e.g. 0,0")


def _int_pair(text: str, separator: str, form: str) -> list[int]:
    parts = text.lower().split(separator)
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: {form} (integers >= 0)")
    return [int(part) for part in parts]


@dataclass(frozen=True)
class Flag:
    name: str  # "--steps"
    key: str  # "sampler.steps"
    metavar: str
    help: str
    type: Callable[[str], object] = str
    choices: tuple[str, ...] = ()
    repeat: bool = False  # each use appends one item to the key's list


LORA = Flag("--lora", "model.loras", "FILE[:SCALE]", "a LoRA (kohya/A1111, LoCon or diffusers/PEFT .safetensors) "
            "merged into the weights at SCALE (default 1); repeat for several, they add up", repeat=True)
EMBEDDING = Flag("--embedding", "model.embeddings", "FILE[:TOKEN]", "a textual-inversion embedding (A1111 .pt or "
                 ".safetensors, diffusers learned_embeds) that TOKEN (default: the file name without suffix) stands "
                 "for in prompts; repeat for several", repeat=True)

FLAGS = (
    Flag("--model", "model.path", "PATH", "'toy' (the shipped toy model, 64x64 shape scenes), 'tiny' (random "
         "weights, draws noise), a .safetensors/.ckpt file or a diffusers folder"),
    LORA,
    EMBEDDING,
    Flag("--prompt", "prompt.text", "TEXT", "the prompt"),
    Flag("--prompt-file", "prompt.file", "FILE", "UTF-8 text, one prompt per line (blank and # lines skipped)"),
    Flag("--negative", "prompt.negative", "TEXT", "negative prompt (replaces the unconditional prompt)"),
    Flag("--preset", "sld.preset", "NAME", "safety setting: none, an SLD preset, negative (the concept as negative "
         "prompt) or SEGA with the concept as its one 'away' edit", choices=SETTING_NAMES),
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
         "--plugin module registers (default: the model family's: pndm; SDXL: euler)"),
    Flag("--hook", "hooks.names", "NAME", "a registered guidance hook, built with no arguments (or hooks.args.NAME) "
         "and applied after the safety hook; repeat for several, in order", repeat=True),
    Flag("--plugin", "plugins", "MODULE", "import this module first (the current folder is on the path) so its "
         "@register_sampler / @register_hook run; repeat for several", repeat=True),
    Flag("--spacing", "sampler.spacing", "NAME", "timestep spacing (default: the model family's, SDXL: leading; "
         "else the sampler's)", choices=SPACINGS),
    Flag("--steps", "sampler.steps", "N", "sampling steps", int),
    Flag("--cfg", "sampler.cfg", "SCALE", "classifier-free guidance scale", float),
    Flag("--seed", "sampler.seed", "N", "seed of the first image; image k of a run uses seed + k", int),
    Flag("--n", "image.n", "N", "images per prompt (compare: rows, one seed each)", int),
    Flag("--height", "image.height", "PX", "image height, a multiple of 8 (default: the model's native size)",
         int),
    Flag("--width", "image.width", "PX", "image width, a multiple of 8 (default: the model's native size)", int),
    Flag("--original-size", "image.original_size", "HxW", "SDXL micro-conditioning: the size the model is told the "
         "training image had (default: the image size)", pixel_pair),
    Flag("--crop-top-left", "image.crops_coords_top_left", "Y,X", "SDXL micro-conditioning: the top-left corner of "
         "the crop the model is told was taken (default: 0,0)", offset_pair),
    Flag("--target-size", "image.target_size", "HxW", "SDXL micro-conditioning: the target size the model is told "
         "(default: the image size)", pixel_pair),
    Flag("--dtype", "model.dtype", "NAME", "dtype to compute in", choices=DTYPE_NAMES),
    Flag("--device", "model.device", "NAME", "torch device: cpu, cuda, cuda:1, mps"),
    Flag("--out", "out", "DIR", "output directory"),
)

_COMMON = ("--model", "--lora", "--embedding", "--prompt", "--negative", "--concept", "--sampler", "--spacing",
           "--steps", "--cfg", "--seed", "--n", "--height", "--width", "--original-size", "--crop-top-left",
           "--target-size", "--dtype", "--device", "--out", "--hook", "--plugin")
_GENERATE = _COMMON + ("--prompt-file", "--preset", "--sld-guidance-scale", "--sld-threshold", "--sld-warmup-steps",
                       "--sld-momentum-scale", "--sld-momentum-beta")
COMMAND_FLAGS = {"generate": _GENERATE, "compare": _COMMON + ("--settings",), "sweep": _GENERATE}

I2P_FLAGS = (
    Flag("--model", "model.path", "PATH", "'toy', 'tiny' (random weights), a .safetensors/.ckpt file or a diffusers folder"),
    LORA,
    EMBEDDING,
    Flag("--dtype", "model.dtype", "NAME", "dtype to compute in", choices=DTYPE_NAMES),
    Flag("--device", "model.device", "NAME", "device type every process uses: cpu, cuda, mps (one process: also "
         "cuda:N)"),
    Flag("--prompts", "prompts.file", "FILE", "the I2P table, CSV or parquet; 'toy': the shipped toy I2P table (default: the "
         "shipped benign sample)"),
    Flag("--categories", "prompts.categories", "LIST", f"comma-separated categories to keep: {', '.join(CATEGORIES)}",
         comma_list),
    Flag("--hard", "prompts.hard", "BOOL", "keep only hard (true) or only not hard (false) prompts", yes_no),
    Flag("--sample", "prompts.sample", "N", "a random sample of N prompts (after the filters)", int),
    Flag("--sample-seed", "prompts.sample_seed", "N", "seed of the prompt sample", int),
    Flag("--settings", "settings", "LIST", f"comma-separated settings: {', '.join(SETTING_NAMES)}", comma_list),
    Flag("--concept", "concept", "TEXT", "the safety concept of every setting (SLD, SEGA's 'away' edit, the negative "
         "prompt; default: the paper's)"),
    Flag("--images-per-prompt", "images.per_prompt", "N", "images per prompt (the paper: 10)", int),
    Flag("--height", "images.height", "PX", "image height for every prompt (default: each row's)", int),
    Flag("--width", "images.width", "PX", "image width for every prompt (default: each row's)", int),
    Flag("--batch-size", "images.batch_size", "N", "images per UNet call (fixed for a run)", int),
    Flag("--sampler", "sampler.name", "NAME", "sampler (None: the model family's: pndm, the paper's; SDXL: euler)",
         choices=SAMPLERS),
    Flag("--steps", "sampler.steps", "N", "sampling steps", int),
    Flag("--devices", "scale.devices", "N", "processes (devices) per node; above 1 runs on Lightning Fabric", int),
    Flag("--num-nodes", "scale.num_nodes", "N", "nodes; above 1 runs on Lightning Fabric", int),
    Flag("--strategy", "scale.strategy", "NAME", "Lightning strategy", choices=STRATEGIES),
    Flag("--out", "out", "DIR", "run directory (created; rerun to continue)"),
)
_I2P_BY_NAME = {flag.name: flag for flag in I2P_FLAGS}
COCO_FLAGS = (
    *(_I2P_BY_NAME[name] for name in ("--model", "--lora", "--embedding", "--dtype", "--device")),
    Flag("--captions", "captions.file", "FILE", "COCO captions_val2014.json or captions_val2017.json (default with "
         "--model toy: the shipped toy captions)"),
    Flag("--sample", "captions.sample", "N", "captions to use, one per image id, a seeded sample (default: 30000, "
         "or every captioned image of a smaller file)", int),
    Flag("--sample-seed", "captions.sample_seed", "N", "seed of the caption sample", int),
    _I2P_BY_NAME["--settings"],
    _I2P_BY_NAME["--concept"],
    Flag("--height", "images.height", "PX", "image height (default: 64 for toy/tiny, else 512)", int),
    Flag("--width", "images.width", "PX", "image width (default: 64 for toy/tiny, else 512)", int),
    *(_I2P_BY_NAME[name] for name in ("--batch-size", "--sampler", "--steps")),
    next(flag for flag in FLAGS if flag.name == "--cfg"),
    *(_I2P_BY_NAME[name] for name in ("--devices", "--num-nodes", "--strategy", "--out")),
)
# a key several configurations have: the same flag
FLAG_BY_KEY = {flag.key: flag for flag in (*FLAGS, *I2P_FLAGS, *COCO_FLAGS)}


def add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...], defaults: object,
              show_empty_defaults: bool = False) -> None:
    """One argparse option per flag, storing into its dotted key (nothing when not given); the help names the key
    and the default read from `defaults` (a configuration instance)."""
    for flag in flags:
        section, _, key = flag.key.rpartition(".")
        default = getattr(getattr(defaults, section) if section else defaults, key)
        hidden = default in (None, []) and not show_empty_defaults
        shown = flag.key + ("" if hidden else f"; default: {default}")
        parser.add_argument(flag.name, dest=flag.key, metavar=None if flag.choices else flag.metavar, type=flag.type,
                            choices=flag.choices or None, default=argparse.SUPPRESS, help=f"{flag.help} [{shown}]",
                            action="append" if flag.repeat else "store")


def describe(key: str) -> str:
    """How a user sets `key`: "--steps (sampler.steps)", or the key alone when no flag sets it."""
    flag = FLAG_BY_KEY.get(key)
    return f"{flag.name} ({key})" if flag else key
