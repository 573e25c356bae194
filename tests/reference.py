"""Reference pipelines and schedulers from diffusers, set up the way the parity tests compare against them, and the
shapes-only state dict detection tests read."""
import torch
from safetensors.torch import save_file

from models.loader import StableDiffusion


def save_safetensors(sd: dict[str, torch.Tensor], path) -> None:
    save_file({k: v.contiguous() for k, v in sd.items()}, path)


def assert_loaded(model: StableDiffusion, expected: dict[str, torch.Tensor], dtype=torch.float64) -> None:
    """The model holds exactly the expected tensors (same keys), in `dtype`."""
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == dtype, key
        assert torch.equal(got[key], tensor.to(dtype)), key


def meta_state_dict(cfg) -> dict[str, torch.Tensor]:
    """Every tensor of the model for `cfg` on the meta device: full-size shapes without memory."""
    with torch.device("meta"):
        return StableDiffusion(cfg).state_dict()


SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                    steps_offset=1)


def float64_scheduler(name: str, **config):
    """A diffusers DDIM or PNDM scheduler in SD's configuration, given our float64 alphas-bar (diffusers computes its
    schedule in float32; tests/test_samplers.py bounds that difference separately)."""
    import diffusers

    from sampling.schedule import alphas_cumprod, scaled_linear_betas

    extra = {"DDIMScheduler": dict(clip_sample=False), "PNDMScheduler": dict(skip_prk_steps=True)}[name]
    scheduler = getattr(diffusers, name)(**SD_SCHEDULER, **extra, **config)
    alphas = alphas_cumprod(scaled_linear_betas())
    scheduler.alphas_cumprod, scheduler.final_alpha_cumprod = alphas, alphas[0]
    return scheduler


def reference_pipeline(parts, tokenizer, scheduler, kind: str = "safe"):
    """diffusers' StableDiffusionPipelineSafe (kind "safe", with the paper's concept) or SemanticStableDiffusionPipeline
    (kind "semantic") over the reference parts, without the safety checker."""
    from diffusers.pipelines.deprecated.semantic_stable_diffusion import SemanticStableDiffusionPipeline
    from diffusers.pipelines.deprecated.stable_diffusion_safe import StableDiffusionPipelineSafe

    import sld

    cls = StableDiffusionPipelineSafe if kind == "safe" else SemanticStableDiffusionPipeline
    unet, vae, text = parts
    pipe = cls(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)
    if kind == "safe":
        pipe.safety_concept = sld.DEFAULT_CONCEPT
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_sld_kwargs(hook) -> dict:
    """StableDiffusionPipelineSafe's arguments for an sld.SLD (None: SLD off)."""
    if hook is None:
        return dict(sld_guidance_scale=0.0)
    return dict(sld_guidance_scale=hook.guidance_scale, sld_warmup_steps=hook.warmup_steps,
                sld_threshold=hook.threshold, sld_momentum_scale=hook.momentum_scale, sld_mom_beta=hook.momentum_beta)


def randomised(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every floating tensor of `sd` replaced by float64 noise: matrices, kernels and embedding tables scaled by their
    fan-in, other weights (norm scales) near 1, everything else (biases, buffers, class embeddings) near 0; integer
    tensors kept."""
    import math

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in sd.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        if name.endswith("weight") and tensor.dim() >= 2:
            out[name] = noise / math.sqrt(math.prod(tensor.shape[1:]))
        elif name.endswith("weight"):
            out[name] = 1.0 + 0.1 * noise
        else:
            out[name] = 0.1 * noise
    return out


class Float64Torch:
    """Stands in for `torch` inside a diffusers scheduler module: its `sample.to(torch.float32)` keeps float64."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def sdxl_scheduler_config() -> dict:
    """SDXL base's scheduler/scheduler_config.json (EulerDiscreteScheduler, leading spacing)."""
    return dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon",
                use_karras_sigmas=False, num_train_timesteps=1000)


def float64_euler():
    """diffusers' Euler in SDXL's configuration, with our float64 leading-spaced sigmas and timesteps."""
    from diffusers import EulerDiscreteScheduler

    from sampling.families import EULER
    from sampling.schedule import alphas_cumprod, scaled_linear_betas

    scheduler = EulerDiscreteScheduler(**sdxl_scheduler_config())
    set_float32_timesteps = scheduler.set_timesteps

    def set_float64_timesteps(num_inference_steps, device=None, **kwargs):
        set_float32_timesteps(num_inference_steps, device=device, **kwargs)
        schedule = EULER.build(num_inference_steps, "leading", alphas_cumprod(scaled_linear_betas()))
        scheduler.sigmas = torch.tensor(schedule.sigmas, dtype=torch.float64)
        scheduler.timesteps = torch.tensor(schedule.timesteps, dtype=torch.float64)

    scheduler.set_timesteps = set_float64_timesteps
    return scheduler
