"""The run configuration of the `sld` command: a dataclass schema (an omegaconf structured config).

Sources, later ones winning: the defaults below, each `--config` YAML file in order, dotlist overrides
(`sld.threshold=0.02 sampler.steps=30`), then flags. configs/defaults.yaml lists every key with its default.
The `plugins` modules are imported before any value is checked, so the samplers and hooks they register are
known by name.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.detect import PREDICTIONS
from sampling.guidance import GuidanceHook
from sampling.registry import HOOKS, SAMPLERS, get_hook
from sampling.samplers import Plan, plan_sampling
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sld.flags import DTYPE_NAMES, PRESET_CHOICES, SLD_CHOICES, describe
from sld.plugins import import_plugins
from sld.safety import DEFAULT_CONCEPT, PRESET_VALUES, SLD, preset
from sld import yamlconfig
from sld.sega import SEGA, sega_safety
from sld.yamlconfig import config_error, merge

SLD_VALUES = ("guidance_scale", "threshold", "warmup_steps", "momentum_scale", "momentum_beta")
SIZE_MULTIPLE = 8  # the Stable Diffusion VAE's downscale factor
MAX_SEED = 2**63 - 1
TRAINING_SCHEDULE = alphas_cumprod(scaled_linear_betas())  # every SD 1.x / 2.x model's, as the pipeline uses


@dataclass
class ModelSection:
    path: str = "toy"  # "toy" | "tiny" | a .safetensors/.ckpt file | a diffusers folder
    dtype: str = "float32"
    device: str = "cpu"
    ema: bool = False  # use the EMA UNet weights of a CompVis training checkpoint
    prediction: str | None = None  # None: detect | "epsilon" | "v"


@dataclass
class PromptSection:
    text: str | None = None
    file: str | None = None  # one prompt per line
    negative: str | None = None


@dataclass
class SamplerSection:
    name: str = "pndm"
    spacing: str | None = None  # None: the sampler's default
    steps: int = 50
    cfg: float = 7.5
    eta: float = 0.0  # samplers that take it: ddim, ddpm
    karras: bool = False  # Karras sigmas, for the samplers that support them
    seed: int = 0  # image k of a run uses seed + k


@dataclass
class ImageSection:
    height: int | None = None  # None: the model's native size (512; 768 for v-prediction models; 64 for toy and tiny)
    width: int | None = None
    n: int = 1  # images per prompt (compare: rows)


@dataclass
class SLDSection:
    preset: str = "medium"  # "none" | "weak" | "medium" | "strong" | "max" | "negative" | "sega-medium|strong|max"
    concept: str | None = None  # None: the paper's concept
    guidance_scale: float | None = None  # None: the preset's value
    threshold: float | None = None
    warmup_steps: int | None = None
    momentum_scale: float | None = None
    momentum_beta: float | None = None


@dataclass
class CompareSection:
    settings: list[str] = field(default_factory=lambda: list(SLD_CHOICES))


@dataclass
class HooksSection:
    names: list[str] = field(default_factory=list)  # registered hooks, applied in order after the safety hook
    args: dict[str, dict[str, Any]] = field(default_factory=dict)  # hook name -> keyword arguments of its factory


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    image: ImageSection = field(default_factory=ImageSection)
    sld: SLDSection = field(default_factory=SLDSection)
    compare: CompareSection = field(default_factory=CompareSection)
    hooks: HooksSection = field(default_factory=HooksSection)
    plugins: list[str] = field(default_factory=list)  # modules imported first: their registrations run
    out: str = "outputs"


@dataclass(frozen=True)
class NegativePrompt:
    """The negative-prompt baseline: the concept replaces the unconditional prompt (pipeline safety="negative")."""

    concept: str


SafetySetting = SLD | SEGA | NegativePrompt | None


def _config_error(source: str, error: OmegaConfBaseException) -> ValueError:
    return config_error(source, error, RunConfig)


def _merge(config, other, source: str):
    return merge(config, other, source, RunConfig)


def read_yaml(path: str) -> DictConfig:
    return yamlconfig.read_yaml(path, RunConfig)


def parse_dotlist(overrides: list[str]) -> DictConfig:
    return yamlconfig.parse_dotlist(overrides, RunConfig)


def merge_run_config(files: list[tuple[str, DictConfig]], overrides: list[str], flags: dict[str, object]
                     ) -> DictConfig:
    """Defaults <- each (path, YAML) in order <- dotlist overrides <- flags (dotted key -> value), unchecked."""
    config = OmegaConf.structured(RunConfig)
    for path, loaded in files:
        config = _merge(config, loaded, f"config file {path!r}")
    config = _merge(config, parse_dotlist(overrides), "overrides")
    for key, value in flags.items():
        set_key(config, key, value, describe(key))
    return config


def set_key(config: DictConfig, key: str, value, source: str) -> None:
    """config[key] = value with the schema's type checks; errors name `source`."""
    try:
        OmegaConf.update(config, key, value, merge=False)
    except OmegaConfBaseException as error:
        raise _config_error(source, error) from None


def run_config_of(config: DictConfig) -> RunConfig:
    """The RunConfig of merged sources, its plug-ins imported, every value checked."""
    try:
        run = OmegaConf.to_object(config)
    except OmegaConfBaseException as error:
        raise _config_error("config", error) from None
    import_plugins(run.plugins)
    check_run_config(run)
    return run


def load_run_config(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> RunConfig:
    """Defaults <- YAML files <- dotlist overrides <- flags (a dict from dotted key to value); validated."""
    files = [(path, read_yaml(path)) for path in config_files]
    return run_config_of(merge_run_config(files, overrides, flags))


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{describe(key)}={value!r} is unknown; allowed: {', '.join(map(str, allowed))}")


def _check_size(key: str, value: int | None) -> None:
    if value is not None and (value < SIZE_MULTIPLE or value % SIZE_MULTIPLE):
        raise ValueError(f"{describe(key)}={value} is invalid; allowed: a positive multiple of {SIZE_MULTIPLE}")


def check_run_config(run: RunConfig) -> None:
    """Every value the command uses, before any model work: ValueError naming the setting and what is allowed."""
    _check_choice("model.dtype", run.model.dtype, DTYPE_NAMES)
    _check_choice("model.prediction", run.model.prediction, (None, *PREDICTIONS))
    _check_choice("sld.preset", run.sld.preset, PRESET_CHOICES)
    _check_choice("sampler.name", run.sampler.name, SAMPLERS)
    sampling_plan(run.sampler)
    if run.sampler.cfg < 0:
        raise ValueError(f"{describe('sampler.cfg')}={run.sampler.cfg} is invalid; allowed: a number >= 0")
    if not 0 <= run.sampler.seed <= MAX_SEED:
        raise ValueError(f"{describe('sampler.seed')}={run.sampler.seed} is invalid; allowed: 0..{MAX_SEED}")
    _check_size("image.height", run.image.height)
    _check_size("image.width", run.image.width)
    if run.image.n < 1:
        raise ValueError(f"{describe('image.n')}={run.image.n} is invalid; allowed: an integer >= 1")
    if isinstance(safety_setting(run.sld), NegativePrompt) and run.prompt.negative is not None:
        raise ValueError(f"{describe('prompt.negative')} cannot be combined with {describe('sld.preset')}='negative', "
                         "which uses the concept as the negative prompt; allowed: one of the two")
    hook_chain(run.hooks)


def sampling_plan(section: SamplerSection) -> Plan:
    """The checked sampler with its placed schedule (the timesteps it visits), without any model."""
    return plan_sampling(section.name, section.steps, section.spacing, TRAINING_SCHEDULE, eta=section.eta,
                         karras=section.karras)


def spacing_of(section: SamplerSection, plan: Plan) -> str:
    """The spacing a run uses: the configured one, else the sampler's default."""
    return section.spacing or plan.sampler.family.spacings[0]


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def safety_setting(section: SLDSection) -> SafetySetting:
    """The exact safety setting the section asks for: an SLD preset with any values replaced, a SEGA safety preset
    or the negative-prompt baseline (each with the section's concept, else the paper's), or None for "none"."""
    given = {key: getattr(section, key) for key in SLD_VALUES if getattr(section, key) is not None}
    if section.preset == "none":
        if given or section.concept is not None:
            first = next(iter(given), "concept")
            raise ValueError(f"{describe('sld.' + first)} is set but {describe('sld.preset')} is 'none'; "
                             f"allowed: choose a setting to start from ({', '.join(PRESET_CHOICES[1:])})")
        return None
    if section.preset in PRESET_VALUES:
        concept = {"concept": section.concept} if section.concept is not None else {}
        return dataclasses.replace(preset(section.preset), **given, **concept)
    if given:
        raise ValueError(f"{describe('sld.' + next(iter(given)))} applies to SLD presets only, but "
                         f"{describe('sld.preset')} is {section.preset!r}; allowed: an SLD preset "
                         f"({', '.join(PRESET_VALUES)}) with these values, or {section.preset!r} without them")
    concept = section.concept or DEFAULT_CONCEPT
    if section.preset == "negative":
        return NegativePrompt(concept)
    return sega_safety(section.preset.removeprefix("sega-"), concept)


def hook_chain(section: HooksSection) -> list[GuidanceHook]:
    """Fresh hooks, in order: each registered factory called with its hooks.args keywords (none by default)."""
    unused = [name for name in section.args if name not in section.names]
    if unused:
        raise ValueError(f"hooks.args.{unused[0]} is set but {unused[0]!r} is not in {describe('hooks.names')}; "
                         f"allowed: arguments of the listed hooks ({', '.join(section.names) or 'none listed'})")
    return [_build_hook(name, section.args.get(name, {})) for name in section.names]


def _build_hook(name: str, args: dict[str, Any]) -> GuidanceHook:
    _check_choice("hooks.names", name, HOOKS)
    try:
        hook = get_hook(name)(**args)
    except (TypeError, ValueError) as error:
        raise ValueError(f"hook {name!r} cannot be built from hooks.args.{name}={args}: {error}") from None
    if not isinstance(hook, GuidanceHook):
        raise ValueError(f"hook {name!r} built {hook!r}; allowed: a guidance hook (name, concepts(), reset(), "
                         "__call__(direction, inputs))")
    return hook
