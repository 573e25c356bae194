"""The configuration of `sld i2p generate`: a dataclass schema (an omegaconf structured config).

Sources, later ones winning: the defaults below, each `--config` YAML file in order (configs/i2p.yaml lists every
key), dotlist overrides (`sampler.steps=30`), then flags. Everything is checked before any model work.
"""
from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sld.eval.flags import SETTINGS, STRATEGIES, describe
from sld.eval.prompts import check_categories
from sld.flags import DTYPE_NAMES
from sld.runconfig import SIZE_MULTIPLE, ModelSection, SamplerSection, sampling_plan
from sld.safety import PRESET_VALUES
from sld.yamlconfig import config_error, merge, parse_dotlist, read_yaml

DEVICE_TYPES = ("cpu", "cuda", "mps")


@dataclass
class PromptsSection:
    file: str | None = None  # None: the shipped benign sample (sld/data/i2p_sample.csv)
    categories: list[str] = field(default_factory=list)  # empty: every category
    hard: bool | None = None  # None: hard and not hard
    sample: int | None = None  # None: every prompt left after the filters
    sample_seed: int = 0


@dataclass
class I2PSamplerSection:
    name: str = "pndm"  # diffusers' StableDiffusionPipelineSafe default, which the paper's numbers come from
    spacing: str | None = None
    steps: int = 50
    eta: float = 0.0
    karras: bool = False


@dataclass
class ImagesSection:
    per_prompt: int = 10  # the paper: 10 images per prompt, x_T drawn as one batch from the row's seed
    height: int | None = None  # None: each row's sd_image_height
    width: int | None = None  # None: each row's sd_image_width
    batch_size: int = 10  # images per UNet call; fixed per run, because it changes float round-off


@dataclass
class ScaleSection:
    devices: int = 1  # processes per node, one device each
    num_nodes: int = 1
    strategy: str = "ddp"


@dataclass
class I2PConfig:
    model: ModelSection = field(default_factory=ModelSection)
    prompts: PromptsSection = field(default_factory=PromptsSection)
    sampler: I2PSamplerSection = field(default_factory=I2PSamplerSection)
    images: ImagesSection = field(default_factory=ImagesSection)
    settings: list[str] = field(default_factory=lambda: ["none", *PRESET_VALUES])
    scale: ScaleSection = field(default_factory=ScaleSection)
    out: str = "runs/i2p"


def sampler_section(section: I2PSamplerSection, guidance: float = 7.5, seed: int = 0) -> SamplerSection:
    """The main command's sampler section for one prompt row (its guidance scale and seed)."""
    return SamplerSection(name=section.name, spacing=section.spacing, steps=section.steps, cfg=guidance,
                          eta=section.eta, karras=section.karras, seed=seed)


def load_i2p_config(config_files: list[str], overrides: list[str], flags: dict[str, object]) -> I2PConfig:
    """Defaults <- YAML files <- dotlist overrides <- flags (dotted key -> value); validated."""
    config = OmegaConf.structured(I2PConfig)
    for path in config_files:
        config = merge(config, read_yaml(path, I2PConfig), f"config file {path!r}", I2PConfig)
    config = merge(config, parse_dotlist(overrides, I2PConfig), "overrides", I2PConfig)
    try:
        run = OmegaConf.to_object(config)
    except OmegaConfBaseException as error:
        raise config_error("config", error, I2PConfig) from None
    for key, value in flags.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(run, section) if section else run, name, value)
    check_i2p_config(run)
    return run


def _at_least(key: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{describe(key)}={value!r} is invalid; allowed: an integer >= {low}")


def _check_settings(settings: list[str]) -> None:
    if not settings:
        raise ValueError(f"{describe('settings')} is empty; allowed: one or more of {', '.join(SETTINGS)}")
    for name in settings:
        if name not in SETTINGS:
            raise ValueError(f"setting {name!r} is unknown; allowed: {', '.join(SETTINGS)}")
    if len(set(settings)) != len(settings):
        raise ValueError(f"{describe('settings')} {settings} name a setting twice; allowed: each at most once")


def check_i2p_config(run: I2PConfig) -> None:
    """Every value the command uses, before any model work: ValueError naming the key and what is allowed."""
    if run.model.dtype not in DTYPE_NAMES:
        raise ValueError(f"{describe('model.dtype')}={run.model.dtype!r} is unknown; allowed: {', '.join(DTYPE_NAMES)}")
    check_categories(run.prompts.categories)
    if run.prompts.sample is not None:
        _at_least("prompts.sample", run.prompts.sample, 1)
    sampling_plan(sampler_section(run.sampler))
    _at_least("images.per_prompt", run.images.per_prompt, 1)
    _at_least("images.batch_size", run.images.batch_size, 1)
    for key in ("height", "width"):
        value = getattr(run.images, key)
        if value is not None and (value < SIZE_MULTIPLE or value % SIZE_MULTIPLE):
            raise ValueError(f"{describe('images.' + key)}={value} is invalid; allowed: a positive multiple of "
                             f"{SIZE_MULTIPLE}, or null for each row's sd_image_{key}")
    _check_settings(run.settings)
    _at_least("scale.devices", run.scale.devices, 1)
    _at_least("scale.num_nodes", run.scale.num_nodes, 1)
    if run.scale.strategy not in STRATEGIES:
        raise ValueError(f"{describe('scale.strategy')}={run.scale.strategy!r} is unknown; "
                         f"allowed: {', '.join(STRATEGIES)}")
