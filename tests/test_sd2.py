"""Stable Diffusion 2.x: OpenCLIP text tower, linear-projection UNet, detection and v-prediction sampling with SLD.

Parity in float64 against diffusers / transformers on the same random weights (tolerance 1e-10 for the parts,
1e-6 for pipeline images as in tests/test_pipeline_parity.py).
"""
import json

import pytest
import torch

import sld
from models.checkpoint import CheckpointError
from models.detect import detect
from models.loader import build, load_checkpoint
from models.sd2 import SD2, TINY_SD2
from sld.pipeline import Pipeline
from reference import (assert_loaded, diffusers_sld_kwargs, float64_scheduler, meta_state_dict, reference_pipeline,
                       save_safetensors)

F64_TOL = 1e-10
IMAGE_TOL = 1e-6
STEPS = 30


@pytest.fixture(scope="module")
def ours(tiny_sd2_weights):
    return build(TINY_SD2, tiny_sd2_weights, "cpu", torch.float64)


@pytest.fixture(scope="module")
def original_file(tiny_sd2_original, tmp_path_factory):
    path = tmp_path_factory.mktemp("sd2") / "v2-tiny.safetensors"
    save_safetensors(tiny_sd2_original, path)
    return path


def test_unet_matches_diffusers(ours, reference_sd2_parts):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 12, generator=g, dtype=torch.float64)
    context = torch.randn(2, 77, TINY_SD2.unet.context_dim, generator=g, dtype=torch.float64)
    t = torch.tensor([999, 11])
    with torch.no_grad():
        expected = reference_sd2_parts[0](x, t, encoder_hidden_states=context).sample
        assert (ours.unet(x, t, context) - expected).abs().max().item() <= F64_TOL


def test_openclip_text_tower_matches_transformers(ours, reference_sd2_parts):
    ids = torch.randint(0, TINY_SD2.text.vocab_size, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_sd2_parts[2](ids).last_hidden_state
        assert (ours.text_encoder(ids) - expected).abs().max().item() <= F64_TOL


def test_upcast_attention_keeps_half_precision_close():
    from models.layers import attend

    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 16, 64, generator=g) * 8 for _ in range(3))
    exact = attend(q.double(), k.double(), v.double(), heads=1)
    upcast = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), heads=1, upcast=True)
    assert upcast.dtype == torch.bfloat16
    assert (upcast.double() - exact).abs().max() <= 0.1 * exact.abs().max()


def test_detects_full_size_sd2_from_shapes():
    found = detect(meta_state_dict(SD2))
    assert found.config == SD2
    assert found.prediction_reason == "the sd2 default (512-pixel SD 2 base models need prediction='epsilon')"


def test_original_file_loads_and_drops_what_sd2_never_runs(original_file, tiny_sd2_weights):
    loaded = load_checkpoint(original_file, dtype=torch.float64)
    assert loaded.model.cfg == TINY_SD2
    assert_loaded(loaded.model, tiny_sd2_weights)


def test_prediction_rules(tiny_sd2_original, tmp_path):
    marked = tmp_path / "marked.safetensors"
    save_safetensors({**tiny_sd2_original, "v_pred": torch.tensor([])}, marked)
    loaded = load_checkpoint(marked)
    assert loaded.model.cfg.prediction == "v" and "v_pred" in loaded.prediction_reason
    override = load_checkpoint(marked, prediction="epsilon")
    assert override.model.cfg.prediction == "epsilon" and override.prediction_reason == "given by the caller"
    with pytest.raises(ValueError, match="prediction='x0' is not allowed"):
        sld.load(str(marked), prediction="x0")


def test_diffusers_folder_loads_exactly(reference_sd2_parts, tiny_sd2_weights, tmp_path):
    unet, vae, text = reference_sd2_parts
    unet.save_pretrained(tmp_path / "unet")
    vae.save_pretrained(tmp_path / "vae")
    text.save_pretrained(tmp_path / "text_encoder")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    loaded = load_checkpoint(tmp_path, dtype=torch.float64)
    assert loaded.model.cfg.text == TINY_SD2.text and loaded.model.cfg.prediction == "epsilon"
    assert loaded.prediction_reason == "the diffusers folder's scheduler config says so"
    assert_loaded(loaded.model, tiny_sd2_weights)


def test_sdxl_and_inpainting_still_refused(tiny_sd2_weights, tmp_path):
    unet_in = "model.diffusion_model.input_blocks.0.0.weight"
    cases = {"sdxl": ({**tiny_sd2_weights, "conditioner.embedders.0.x": torch.zeros(1)}, "SDXL"),
             "inpaint": ({**tiny_sd2_weights, unet_in: torch.zeros(64, 9, 3, 3)}, "9 input channels")}
    for name, (sd, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_safetensors(sd, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


@pytest.fixture(scope="module")
def reference_pipes(reference_sd2_parts, reference_tokenizer):
    """StableDiffusionPipelineSafe with v-prediction schedulers and a tokenizer padding with 0, as SD 2's does."""
    import copy

    tokenizer = copy.deepcopy(reference_tokenizer)
    tokenizer.pad_token = "!"
    return {name: reference_pipeline(reference_sd2_parts, tokenizer, float64_scheduler(cls, prediction_type="v_prediction"))
            for name, cls in (("ddim", "DDIMScheduler"), ("pndm", "PNDMScheduler"))}


def run_reference(pipe, latents, hook):
    captured = {}
    out = pipe(["a photo of a cat", "a red car"], height=64, width=64, num_inference_steps=STEPS, guidance_scale=7.5,
               negative_prompt=["blurry", "dark"], latents=latents.clone(), output_type="np",
               callback=lambda i, t, x: captured.__setitem__("x", x), **diffusers_sld_kwargs(hook))
    return out.images, captured["x"]


@pytest.mark.parametrize("preset", ["medium", "max"])
def test_v_model_ddim_pipeline_matches_diffusers_in_model_space(ours, reference_pipes, preset):
    import dataclasses

    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hook = dataclasses.replace(sld.PRESETS[preset], space="model")
    images, final = run_reference(reference_pipes["ddim"], latents, hook)
    got = Pipeline(ours)(["a photo of a cat", "a red car"], negative_prompt=["blurry", "dark"], height=64, width=64,
                         steps=STEPS, sampler="ddim", latents=latents, safety=hook, output_type="np")
    assert (got.latents - final).abs().max().item() <= 1e-8
    assert abs(got.images - images).max() <= IMAGE_TOL
    eps_space = Pipeline(ours)(["a photo of a cat", "a red car"], negative_prompt=["blurry", "dark"], height=64,
                               width=64, steps=STEPS, sampler="ddim", latents=latents, safety=sld.PRESETS[preset],
                               output_type="np")
    assert abs(eps_space.images - images).max() > 100 * IMAGE_TOL  # the paper's eps space differs on v-models


@pytest.mark.parametrize("preset", ["medium", "max"])
def test_v_model_pndm_diffusers_matches_diffusers_and_pndm_is_compvis(ours, reference_pipes, preset):
    """diffusers' PNDMScheduler combines raw v outputs of several timesteps and converts the sum with the current
    x_t: `pndm_diffusers` does the same and matches it; `pndm` combines eps (CompVis' SD 2 plms.py) and differs."""
    import dataclasses

    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    hook = dataclasses.replace(sld.PRESETS[preset], space="model")
    images, final = run_reference(reference_pipes["pndm"], latents, hook)
    runs = {name: Pipeline(ours)(["a photo of a cat", "a red car"], negative_prompt=["blurry", "dark"], height=64,
                                 width=64, steps=STEPS, sampler=name, latents=latents, safety=hook, output_type="np")
            for name in ("pndm_diffusers", "pndm")}
    assert (runs["pndm_diffusers"].latents - final).abs().max().item() <= 1e-8
    assert abs(runs["pndm_diffusers"].images - images).max() <= IMAGE_TOL
    assert abs(runs["pndm"].images - images).max() > 100 * IMAGE_TOL
