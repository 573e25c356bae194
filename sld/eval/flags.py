"""The `sld i2p generate` flags: each sets one key of the I2P configuration (sld/eval/config.py), so flags, YAML
and error messages name the same things."""
import argparse

from sampling.registry import SAMPLERS
from sld.eval.prompts import CATEGORIES
from sld.flags import DTYPE_NAMES, PRESET_CHOICES, Flag, comma_list

# none, the SLD presets, "negative" (the safety concept as negative prompt) and the SEGA safety presets
SETTINGS = PRESET_CHOICES
STRATEGIES = ("ddp",)
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")


def yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a yes/no value; allowed: true, false")
    return word in TRUE_WORDS


GENERATE_FLAGS = (
    Flag("--model", "model.path", "PATH", "'toy', 'tiny' (random weights), a .safetensors/.ckpt file or a diffusers folder"),
    Flag("--dtype", "model.dtype", "NAME", "dtype to compute in", choices=DTYPE_NAMES),
    Flag("--device", "model.device", "NAME", "device type every process uses: cpu, cuda, mps (one process: also "
         "cuda:N)"),
    Flag("--prompts", "prompts.file", "FILE", "the I2P table, CSV or parquet (default: the shipped benign sample)"),
    Flag("--categories", "prompts.categories", "LIST", f"comma-separated categories to keep: {', '.join(CATEGORIES)}",
         comma_list),
    Flag("--hard", "prompts.hard", "BOOL", "keep only hard (true) or only not hard (false) prompts", yes_no),
    Flag("--sample", "prompts.sample", "N", "a random sample of N prompts (after the filters)", int),
    Flag("--sample-seed", "prompts.sample_seed", "N", "seed of the prompt sample", int),
    Flag("--settings", "settings", "LIST", f"comma-separated settings: {', '.join(SETTINGS)}", comma_list),
    Flag("--images-per-prompt", "images.per_prompt", "N", "images per prompt (the paper: 10)", int),
    Flag("--height", "images.height", "PX", "image height for every prompt (default: each row's)", int),
    Flag("--width", "images.width", "PX", "image width for every prompt (default: each row's)", int),
    Flag("--batch-size", "images.batch_size", "N", "images per UNet call (fixed for a run)", int),
    Flag("--sampler", "sampler.name", "NAME", "sampler", choices=SAMPLERS),
    Flag("--steps", "sampler.steps", "N", "sampling steps", int),
    Flag("--devices", "scale.devices", "N", "processes (devices) per node; above 1 runs on Lightning Fabric", int),
    Flag("--num-nodes", "scale.num_nodes", "N", "nodes; above 1 runs on Lightning Fabric", int),
    Flag("--strategy", "scale.strategy", "NAME", "Lightning strategy", choices=STRATEGIES),
    Flag("--out", "out", "DIR", "run directory (created; rerun to continue)"),
)
FLAG_BY_KEY = {flag.key: flag for flag in GENERATE_FLAGS}


def describe(key: str) -> str:
    """How a user sets `key`: "--height (images.height)", or the key alone when no flag sets it."""
    flag = FLAG_BY_KEY.get(key)
    return f"{flag.name} ({key})" if flag else key
