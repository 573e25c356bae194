"""The configurations of the `sld` command, typed (omegaconf structured configs) and read by one loader: the run
configuration of generate, compare and sweep (RunConfig, below) and the I2P configuration (sld/eval/config.py).

Sources, later ones winning: the schema's defaults, each `--config` YAML file in order, dotlist overrides
(`sld.threshold=0.02 sampler.steps=30`), then flags, each set through the schema's type checks.
configs/defaults.yaml lists every run key with its default, configs/i2p.yaml every I2P key. A run's `plugins`
modules are imported before any value is checked, so the samplers and hooks they register are known by name.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sampling.guidance import GuidanceHook
from sampling.parameterization import PREDICTIONS
from sampling.registry import HOOKS, SAMPLERS, get_hook
from sld.cli.flags import SLD_CHOICES, describe
from sld.cli.plugins import import_plugins
from sld.cli.yamlconfig import config_error, merge, parse_dotlist, read_yaml
from sld.eval.config import STRATEGIES, CocoConfig, I2PConfig, sampler_section
from sld.hooks.resolve import NONE, SETTING_NAMES, Safety, check_concept, guidance_hooks, resolve_safety
from sld.hooks.safety import PRESET_VALUES, SLD_VALUES, preset
from sld.options import MAX_SEED, MICRO_CONDITIONING, check_micro_conditioning, check_size
from sld.settings import DTYPE_NAMES, ModelSection, SamplerSection, check_before_loading


@dataclass
class PromptSection:
    text: str | None = None
    file: str | None = None  # one prompt per line
    negative: str | None = None


@dataclass
class ImageSection:
    height: int | None = None  # None: the model's native size (512; 768 for v-prediction models; 1024 for SDXL; 64 for toy and tiny)
    width: int | None = None
    n: int = 1  # images per prompt (compare: rows)
    # SDXL's micro-conditioning (sld/options.py), [H, W], [Y, X], [H, W]; None: the image size, [0, 0], the image size
    original_size: list[int] | None = None
    crops_coords_top_left: list[int] | None = None
    target_size: list[int] | None = None


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


def merged_config(schema: type, files: list[tuple[str, DictConfig]], overrides: list[str],
                  flags: dict[str, object]) -> DictConfig:
    """Defaults <- each (path, YAML) in order <- dotlist overrides <- flags (dotted key -> value), unchecked."""
    config = OmegaConf.structured(schema)
    for path, loaded in files:
        config = merge(config, loaded, f"config file {path!r}", schema)
    config = merge(config, parse_dotlist(overrides, schema), "overrides", schema)
    for key, value in flags.items():
        set_key(config, key, value, describe(key), schema)
    return config


def config_object(config: DictConfig, schema: type):
    """The dataclass instance of merged sources, or one line naming the bad key."""
    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as error:
        raise config_error("config", error, schema) from None


def set_key(config: DictConfig, key: str, value, source: str, schema: type = None) -> None:
    """config[key] = value with the schema's type checks; errors name `source`."""
    try:
        OmegaConf.update(config, key, value, merge=False)
    except OmegaConfBaseException as error:
        raise config_error(source, error, schema or RunConfig) from None


def run_config_of(config: DictConfig) -> RunConfig:
    """The RunConfig of merged sources, its plug-ins imported, every value checked."""
    run = config_object(config, RunConfig)
    import_plugins(run.plugins)
    check_run_config(run)
    return run


def merge_run_config(files: list[tuple[str, DictConfig]], overrides: list[str], flags: dict[str, object]
                     ) -> DictConfig:
    return merged_config(RunConfig, files, overrides, flags)


def load_run_config(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> RunConfig:
    """Defaults <- YAML files <- dotlist overrides <- flags (a dict from dotted key to value); validated."""
    files = [(path, read_yaml(path, RunConfig)) for path in config_files]
    return run_config_of(merge_run_config(files, overrides, flags))


def load_i2p_config(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> I2PConfig:
    return _load_checked(I2PConfig, check_i2p_config, config_files, overrides, flags)


def load_coco_config(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> CocoConfig:
    return _load_checked(CocoConfig, check_coco_config, config_files, overrides, flags)


def _load_checked(schema: type, check: Callable[[object], None], config_files: list[str], overrides: list[str],
                  flags: dict[str, object]):
    """Defaults <- YAML files <- dotlist overrides <- flags (dotted key -> value); validated by `check`."""
    files = [(path, read_yaml(path, schema)) for path in config_files]
    run = config_object(merged_config(schema, files, overrides, flags), schema)
    check(run)
    return run


def _check_guidance(scale: float) -> None:
    if scale < 0:
        raise ValueError(f"{describe('sampler.cfg')}={scale} is invalid; allowed: a number >= 0")


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{describe(key)}={value!r} is unknown; allowed: {', '.join(map(str, allowed))}")


def _check_size(key: str, value: int | None, alternative: str = "") -> None:
    if value is not None:
        check_size(describe(key), value, alternative=alternative)


def check_run_config(run: RunConfig) -> None:
    """Every value the command uses, before any model work: ValueError naming the setting and what is allowed."""
    _check_choice("model.dtype", run.model.dtype, DTYPE_NAMES)
    _check_choice("model.prediction", run.model.prediction, (None, *PREDICTIONS))
    _check_choice("sld.preset", run.sld.preset, SETTING_NAMES)
    if run.sampler.name is not None:  # None: the model family's, known once it is loaded
        _check_choice("sampler.name", run.sampler.name, SAMPLERS)
    check_before_loading(run.sampler)
    _check_guidance(run.sampler.cfg)
    if not 0 <= run.sampler.seed <= MAX_SEED:
        raise ValueError(f"{describe('sampler.seed')}={run.sampler.seed} is invalid; allowed: 0..{MAX_SEED}")
    _check_size("image.height", run.image.height)
    _check_size("image.width", run.image.width)
    if run.image.n < 1:
        raise ValueError(f"{describe('image.n')}={run.image.n} is invalid; allowed: an integer >= 1")
    check_micro_conditioning(micro_conditioning_of(run.image), describe_image_key)  # the family: once loaded
    if safety_setting(run.sld).negative_prompt is not None and run.prompt.negative is not None:
        raise ValueError(f"{describe('prompt.negative')} cannot be combined with {describe('sld.preset')}='negative', "
                         "which uses the concept as the negative prompt; allowed: one of the two")
    hook_chain(run.hooks)


def micro_conditioning_of(image: ImageSection) -> dict[str, list[int] | None]:
    """SDXL's micro-conditioning keywords as the image section sets them (None: unset)."""
    return {name: getattr(image, name) for name in MICRO_CONDITIONING}


def describe_image_key(name: str) -> str:
    return describe("image." + name)


def safety_setting(section: SLDSection) -> Safety:
    """The exact safety setting the section asks for: an SLD preset with any values replaced, a SEGA safety preset
    or the negative-prompt baseline (each with the section's concept, else the paper's), or none."""
    given = {key: getattr(section, key) for key in SLD_VALUES if getattr(section, key) is not None}
    if section.preset == NONE:
        if given or section.concept is not None:
            first = next(iter(given), "concept")
            raise ValueError(f"{describe('sld.' + first)} is set but {describe('sld.preset')} is 'none'; "
                             f"allowed: choose a setting to start from ({', '.join(SETTING_NAMES[1:])})")
        return resolve_safety(None)
    if section.preset in PRESET_VALUES:
        return resolve_safety(dataclasses.replace(preset(section.preset), **given), section.concept,
                              label=section.preset)
    if given:
        raise ValueError(f"{describe('sld.' + next(iter(given)))} applies to SLD presets only, but "
                         f"{describe('sld.preset')} is {section.preset!r}; allowed: an SLD preset "
                         f"({', '.join(PRESET_VALUES)}) with these values, or {section.preset!r} without them")
    return resolve_safety(section.preset, section.concept)


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
    [checked] = guidance_hooks([hook])
    return checked


def _at_least(key: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{describe(key)}={value!r} is invalid; allowed: an integer >= {low}")


def _check_settings(settings: list[str]) -> None:
    if not settings:
        raise ValueError(f"{describe('settings')} is empty; allowed: one or more of {', '.join(SETTING_NAMES)}")
    for name in settings:
        if name not in SETTING_NAMES:
            raise ValueError(f"setting {name!r} is unknown; allowed: {', '.join(SETTING_NAMES)}")
    if len(set(settings)) != len(settings):
        raise ValueError(f"{describe('settings')} {settings} name a setting twice; allowed: each at most once")


def check_i2p_config(run: I2PConfig) -> None:
    """Every value `sld i2p generate` uses, before any model work: ValueError naming the key and what is allowed."""
    if run.prompts.sample is not None:
        _at_least("prompts.sample", run.prompts.sample, 1)
    _check_run_sections(run, ", or null for each row's sd_image_{key}")


def check_coco_config(run: CocoConfig) -> None:
    """Every value `sld coco generate` uses, before any model work (the captions file is read by the command)."""
    if run.captions.sample is not None:
        _at_least("captions.sample", run.captions.sample, 1)
    _check_guidance(run.sampler.cfg)
    _check_run_sections(run, ", or null for the model's default")


def _check_run_sections(run: I2PConfig | CocoConfig, size_alternative: str) -> None:
    """The sections both evaluation runs share: model dtype, sampler, images, settings and scale."""
    _check_choice("model.dtype", run.model.dtype, DTYPE_NAMES)
    check_before_loading(sampler_section(run.sampler))
    _at_least("images.per_prompt", run.images.per_prompt, 1)
    _at_least("images.batch_size", run.images.batch_size, 1)
    for key in ("height", "width"):
        _check_size("images." + key, getattr(run.images, key), size_alternative.format(key=key))
    _check_settings(run.settings)
    check_concept(run.concept)
    _at_least("scale.devices", run.scale.devices, 1)
    _at_least("scale.num_nodes", run.scale.num_nodes, 1)
    _check_choice("scale.strategy", run.scale.strategy, STRATEGIES)
