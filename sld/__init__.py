"""Safe Latent Diffusion: load a Stable Diffusion checkpoint and sample with SLD and any other guidance hook."""
from sld.api import load
from sld.hooks.safety import DEFAULT_CONCEPT, PRESETS, SLD
from sld.hooks.sega import SEGA, EditConcept
from sld.pipeline import Output, Pipeline

__all__ = ["load", "Pipeline", "Output", "SLD", "PRESETS", "DEFAULT_CONCEPT", "SEGA", "EditConcept"]
__version__ = "0.1.0"
