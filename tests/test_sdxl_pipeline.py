"""The SDXL pipeline against diffusers' StableDiffusionXLPipeline on the same random weights, in float64.

Our model is loaded from the original-layout file and from the diffusers folder (whose weights diffusers' own
single-file loader converted); the reference runs from the folder with our float64 schedule injected (diffusers
rounds its schedule to float32, tests/test_samplers_k.py bounds that separately) and Euler's float32 upcast kept in
float64. 30 steps (1000 % 30 != 0). Images within 1e-6, final latents within 1e-8.
"""
import pytest
import torch

from models.loader import load_checkpoint
from sld.pipeline import Pipeline
from reference import Float64Torch, float64_euler, float64_scheduler

IMAGE_TOL = 1e-6
LATENT_TOL = 1e-8
STEPS = 30
PROMPTS = ["a photo of a cat", "a red car in the rain"]
NEGATIVES = ["blurry", "low quality, watermark"]


@pytest.fixture(scope="module")
def ours(tiny_sdxl_file, tiny_sdxl_folder):
    return {source: Pipeline(load_checkpoint(path, dtype=torch.float64).model)
            for source, path in (("file", tiny_sdxl_file), ("folder", tiny_sdxl_folder))}


@pytest.fixture(scope="module")
def reference(tiny_sdxl_folder):
    """StableDiffusionXLPipeline from the folder, one per sampler."""
    from diffusers import StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_folder), torch_dtype=torch.float64)
    schedulers = {"euler": float64_euler(), "ddim": float64_scheduler("DDIMScheduler", timestep_spacing="leading")}
    pipes = {name: StableDiffusionXLPipeline(**{**base.components, "scheduler": s}) for name, s in schedulers.items()}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


@pytest.fixture
def float64_euler_step(monkeypatch):
    import diffusers.schedulers.scheduling_euler_discrete as euler

    monkeypatch.setattr(euler, "torch", Float64Torch())


def run_both(ours, reference, sampler, prompt, negative, size, per_prompt, seed=0, **micro):
    n_prompts = 1 if isinstance(prompt, str) else len(prompt)
    latents = torch.randn(n_prompts * per_prompt, 4, size[0] // 8, size[1] // 8,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    captured = {}

    def capture(pipe, i, t, kwargs):
        captured["latents"] = kwargs["latents"]
        return {}

    expected = reference[sampler](
        prompt, negative_prompt=negative, height=size[0], width=size[1], num_inference_steps=STEPS, guidance_scale=7.5,
        num_images_per_prompt=per_prompt, latents=latents.clone(), output_type="np", callback_on_step_end=capture,
        **micro)
    got = ours(prompt, negative_prompt=negative, height=size[0], width=size[1], steps=STEPS, guidance_scale=7.5,
               sampler=sampler, latents=latents, num_images_per_prompt=per_prompt, safety=None, output_type="np",
               **micro)
    return got, expected.images, captured["latents"]


@pytest.mark.parametrize("source", ["file", "folder"])
@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_two_prompts_negatives_non_square(ours, reference, float64_euler_step, source, sampler):
    got, images, latents = run_both(ours[source], reference, sampler, PROMPTS, NEGATIVES, (64, 96), 2, seed=1)
    assert got.images.shape == (4, 64, 96, 3)
    assert (got.latents - latents).abs().max().item() <= LATENT_TOL
    assert abs(got.images - images).max() <= IMAGE_TOL


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_no_negative_prompt_zeroed_and_micro_conditioning(ours, reference, float64_euler_step, sampler):
    micro = dict(original_size=(128, 96), crops_coords_top_left=(8, 0), target_size=(64, 80))
    got, images, latents = run_both(ours["file"], reference, sampler, "a photo of a cat", None, (64, 64), 1, seed=2,
                                    **micro)
    assert (got.latents - latents).abs().max().item() <= LATENT_TOL
    assert abs(got.images - images).max() <= IMAGE_TOL
    default = ours["file"]("a photo of a cat", height=64, width=64, steps=STEPS, sampler=sampler, safety=None,
                           latents=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2),
                                               dtype=torch.float64), output_type="np")
    assert abs(default.images - images).max() > 100 * IMAGE_TOL  # the micro-conditioning reaches the UNet


def test_explicit_empty_negative_is_encoded_not_zeroed(ours, reference, float64_euler_step):
    got, images, latents = run_both(ours["file"], reference, "euler", "a photo of a cat", "", (64, 64), 1, seed=3)
    assert abs(got.images - images).max() <= IMAGE_TOL
    zeroed = ours["file"]("a photo of a cat", height=64, width=64, steps=STEPS, safety=None, output_type="np",
                          latents=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3),
                                              dtype=torch.float64))
    assert abs(zeroed.images - images).max() > 100 * IMAGE_TOL


def test_family_defaults_and_micro_conditioning_checks(ours, tiny_weights):
    from models.loader import build
    from models.sd1 import TINY_SD1

    pipe = ours["file"]
    assert (pipe.family.sampler, pipe.family.spacing, pipe.family.native_size) == ("euler", "leading", 1024)
    first, second = (tokenizer("a cat")[0] for tokenizer in pipe.tokenizers)
    assert first[4:].tolist() == [49407] * 73 and second[4:].tolist() == [0] * 73  # pads: the end token, then id 0
    with pytest.raises(ValueError, match=r"crops_coords_top_left=\(1, 2, 3\) is invalid; allowed: a pair of integers"):
        pipe("a cat", height=64, width=64, steps=1, crops_coords_top_left=(1, 2, 3))
    sd1 = Pipeline(build(TINY_SD1, tiny_weights, "cpu", torch.float32))
    with pytest.raises(ValueError, match=r"original_size=\(64, 64\): the sd1 model takes no micro-conditioning"):
        sd1("a cat", height=64, width=64, steps=1, original_size=(64, 64))
