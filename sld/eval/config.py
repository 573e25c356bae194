"""The configuration of `sld i2p generate`: a dataclass schema (an omegaconf structured config), read and checked by
the command line (sld/cli/config.py): the defaults below, each `--config` YAML file in order (configs/i2p.yaml lists
every key), dotlist overrides (`sampler.steps=30`), then flags. Everything is checked before any model work.
"""
from dataclasses import dataclass, field

from sld.hooks.safety import PRESET_VALUES
from sld.settings import ModelSection, SamplerSection

DEVICE_TYPES = ("cpu", "cuda", "mps")
STRATEGIES = ("ddp",)


@dataclass
class PromptsSection:
    file: str | None = None  # None: the shipped benign sample (sld/data/i2p_sample.csv); "toy": the toy I2P table
    categories: list[str] = field(default_factory=list)  # empty: every category
    hard: bool | None = None  # None: hard and not hard
    sample: int | None = None  # None: every prompt left after the filters
    sample_seed: int = 0


@dataclass
class I2PSamplerSection:
    # None: the model family's (SD 1/2: pndm, diffusers' StableDiffusionPipelineSafe default, which the paper's
    # numbers come from; SDXL: euler)
    name: str | None = None
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
    concept: str | None = None  # the safety concept of every setting; None: the paper's
    scale: ScaleSection = field(default_factory=ScaleSection)
    out: str = "runs/i2p"


def sampler_section(section: I2PSamplerSection, guidance: float = 7.5, seed: int = 0) -> SamplerSection:
    """The main command's sampler section for one prompt row (its guidance scale and seed)."""
    return SamplerSection(name=section.name, spacing=section.spacing, steps=section.steps, cfg=guidance,
                          eta=section.eta, karras=section.karras, seed=seed)


@dataclass
class CaptionsSection:
    file: str | None = None  # the COCO captions JSON; None: the shipped toy captions (--model toy only)
    sample: int | None = None  # None: 30,000 (FID-30k), or every captioned image of a smaller file
    sample_seed: int = 0


@dataclass
class CocoSamplerSection(I2PSamplerSection):
    cfg: float = 7.5  # the paper's guidance scale for every caption


@dataclass
class CocoImagesSection(ImagesSection):
    per_prompt: int = 1  # FID-30k: one image per caption
    height: int | None = None  # None: 64 for the built-in models, else 512 (SD 1.x, the paper's model)
    width: int | None = None


@dataclass
class CocoConfig:
    """`sld coco generate`: the I2P run's sections, with COCO captions for prompts and one guidance scale."""

    model: ModelSection = field(default_factory=ModelSection)
    captions: CaptionsSection = field(default_factory=CaptionsSection)
    sampler: CocoSamplerSection = field(default_factory=CocoSamplerSection)
    images: CocoImagesSection = field(default_factory=CocoImagesSection)
    settings: list[str] = field(default_factory=lambda: ["none", *PRESET_VALUES])
    concept: str | None = None  # the safety concept of every setting; None: the paper's
    scale: ScaleSection = field(default_factory=ScaleSection)
    out: str = "runs/coco"
