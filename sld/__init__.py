"""Safe Latent Diffusion: load a Stable Diffusion checkpoint and sample with SLD and any other guidance hook."""
from sld.api import load
from sld.pipeline import Output, Pipeline
from sld.safety import DEFAULT_CONCEPT, PRESETS, SLD
from sld.sega import SEGA, EditConcept

__all__ = ["load", "Pipeline", "Output", "SLD", "PRESETS", "DEFAULT_CONCEPT", "SEGA", "EditConcept"]
__version__ = "0.1.0"
