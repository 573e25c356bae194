"""The built-in samplers: (name, function, schedule family). sampling/registry.py registers them when imported."""
from sampling.ddim import sample_ddim
from sampling.ddpm import sample_ddpm
from sampling.dpm_solver import sample_dpmpp_2m
from sampling.euler import sample_euler, sample_euler_ancestral, sample_heun
from sampling.families import DISCRETE, DPM_SOLVER, EULER
from sampling.lms import sample_lms
from sampling.pndm import sample_pndm, sample_pndm_diffusers

BUILTINS = (
    ("pndm", sample_pndm, DISCRETE),
    ("ddim", sample_ddim, DISCRETE),
    ("euler", sample_euler, EULER),
    ("euler_a", sample_euler_ancestral, EULER),
    ("heun", sample_heun, EULER),
    ("lms", sample_lms, EULER),
    ("dpmpp_2m", sample_dpmpp_2m, DPM_SOLVER),
    ("ddpm", sample_ddpm, DISCRETE),
    ("pndm_diffusers", sample_pndm_diffusers, DISCRETE),
)
