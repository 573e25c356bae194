"""The request of one pipeline call, normalised and checked once at the pipeline's door, before any model work:
bad values raise ValueError naming what is allowed. The sampler plan (sampling/samplers.py) owns steps, eta,
spacing and Karras; the safety resolver (sld/hooks/resolve.py) owns safety settings and hooks. The size and seed
rules here are the ones the command line and the evaluation check their configs with, too.
"""
from dataclasses import dataclass

import torch

SIZE_MULTIPLE = 8  # the Stable Diffusion VAE's downscale factor
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationOptions:
    prompt: object
    negative_prompt: object
    height: int
    width: int
    guidance_scale: float
    seed: object
    latents: torch.Tensor | None
    num_images_per_prompt: int
    output_type: str


def _texts(value, name: str) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r}")
    return list(texts)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_size(name: str, value, multiple: int = SIZE_MULTIPLE, alternative: str = "") -> None:
    """An image side must be a positive multiple of the VAE's downscale factor; `alternative` adds what else is
    allowed where the value is optional."""
    if not _is_int(value) or value < multiple or value % multiple:
        raise ValueError(f"{name}={value!r} is invalid; allowed: a positive multiple of {multiple}{alternative}")


def check_options(opts: GenerationOptions, downscale: int, latent_channels: int, output_types: tuple[str, ...]
                  ) -> tuple[list[str], list[str]]:
    """Validate everything; return the prompts and one negative (or empty) prompt per prompt."""
    prompts = _texts(opts.prompt, "prompt")
    negatives = [""] * len(prompts) if opts.negative_prompt is None else _texts(opts.negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(f"negative_prompt has {len(negatives)} entries but prompt has {len(prompts)}; "
                         "give one negative prompt, or one per prompt")
    check_size("height", opts.height, downscale)
    check_size("width", opts.width, downscale)
    if not isinstance(opts.guidance_scale, (int, float)) or opts.guidance_scale < 0:
        raise ValueError(f"guidance_scale={opts.guidance_scale!r} is invalid; allowed: a number >= 0")
    if not _is_int(opts.num_images_per_prompt) or opts.num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt={opts.num_images_per_prompt!r} is invalid; allowed: an integer >= 1")
    if opts.seed is not None and not _is_int(opts.seed):
        raise ValueError(f"seed={opts.seed!r} is invalid; allowed: None or an integer")
    if opts.output_type not in output_types:
        raise ValueError(f"output_type={opts.output_type!r} is unknown; allowed: {', '.join(output_types)}")
    if opts.latents is not None:
        expected = (len(prompts) * opts.num_images_per_prompt, latent_channels,
                    opts.height // downscale, opts.width // downscale)
        if not isinstance(opts.latents, torch.Tensor) or tuple(opts.latents.shape) != expected:
            shape = tuple(opts.latents.shape) if isinstance(opts.latents, torch.Tensor) else type(opts.latents).__name__
            raise ValueError(f"latents have shape {shape}; expected {expected} "
                             "(prompts * num_images_per_prompt, channels, height / 8, width / 8)")
    return prompts, negatives


MICRO_CONDITIONING = ("original_size", "crops_coords_top_left", "target_size")


def check_micro_conditioning(values: dict[str, object], describe=str) -> dict[str, tuple[int, int]]:
    """The given (not None) values of SDXL's micro-conditioning, each a pair of integers >= 0; `describe` names a
    keyword in errors (the command line: its flag and key)."""
    given = {}
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_int(v) and v >= 0 for v in value):
            raise ValueError(f"{describe(name)}={value!r} is invalid; allowed: a pair of integers >= 0, "
                             "e.g. (1024, 1024)")
        given[name] = tuple(value)
    return given


def micro_conditioning_values(values: dict[str, object], height: int, width: int, family: str, supported: bool,
                              describe=str) -> dict[str, tuple[int, int]] | None:
    """SDXL's micro-conditioning, the given values checked (check_micro_conditioning), the others at their defaults
    (original_size and target_size (height, width), crops_coords_top_left (0, 0)); None for a family without
    micro-conditioning, which refuses any given value."""
    given = check_micro_conditioning(values, describe)
    if not supported:
        if given:
            name = next(iter(given))
            raise ValueError(f"{describe(name)}={values[name]!r}: the {family} model takes no micro-conditioning "
                             f"({', '.join(MICRO_CONDITIONING)} are SDXL's); leave it unset")
        return None
    defaults = dict(original_size=(height, width), crops_coords_top_left=(0, 0), target_size=(height, width))
    return {name: given.get(name, defaults[name]) for name in MICRO_CONDITIONING}


def micro_conditioning(values: dict[str, object], height: int, width: int, family: str, supported: bool
                       ) -> tuple[int, ...] | None:
    """SDXL's six time ids in the UNet's order (micro_conditioning_values); None for a family without them."""
    chosen = micro_conditioning_values(values, height, width, family, supported)
    return None if chosen is None else tuple(v for pair in chosen.values() for v in pair)
