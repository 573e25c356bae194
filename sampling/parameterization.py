"""One wrapper per parameterisation (k-diffusion `external.py`): what the network outputs -> eps, so samplers and
hooks never branch on the model type.

v-prediction (Salimans & Ho 2022, Sec. 4): v = sqrt(a) eps - sqrt(1 - a) x0 with x_t = sqrt(a) x0 + sqrt(1 - a) eps,
hence eps = sqrt(a) v + sqrt(1 - a) x_t. A difference of two outputs at the same (x_t, t) maps by the factor sqrt(a).
"""
import math

import torch

PREDICTIONS = ("epsilon", "v")
# where a guidance hook edits its direction and what PNDM's multistep formula combines: noise predictions, or what the
# network outputs (v for v-models; the same as eps for epsilon models)
SPACES = ("eps", "model")


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is unknown; allowed: {', '.join(PREDICTIONS)}")


def alpha_at(alphas_cumprod: torch.Tensor, t: float) -> float:
    """alpha-bar at an integer timestep, or at a fractional one by linear interpolation of sigma = sqrt((1-a)/a)
    over the training timesteps, as diffusers' sigma samplers interpolate."""
    if float(t).is_integer():
        return alphas_cumprod[int(t)].item()
    low = math.floor(t)
    sigmas = ((1 - alphas_cumprod[low:low + 2]) / alphas_cumprod[low:low + 2]).sqrt()
    sigma = (sigmas[0] + (t - low) * (sigmas[1] - sigmas[0])).item()
    return 1.0 / (1.0 + sigma * sigma)


def eps_per_output(prediction: str, alpha: float) -> float:
    """d eps / d output at fixed x_t: 1 for epsilon models, sqrt(alpha-bar) for v models."""
    return 1.0 if prediction == "epsilon" else math.sqrt(alpha)


def to_eps(prediction: str, output: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    if prediction == "epsilon":
        return output
    return math.sqrt(alpha) * output + math.sqrt(1.0 - alpha) * x


def from_eps(prediction: str, eps: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The inverse of `to_eps`: v = (eps - sqrt(1 - a) x_t) / sqrt(a)."""
    if prediction == "epsilon":
        return eps
    return (eps - math.sqrt(1.0 - alpha) * x) / math.sqrt(alpha)
