"""Stable Diffusion XL: detection, the two text towers, the text_time UNet and loading, against diffusers and
transformers on the same random weights in float64 (parts within 1e-10)."""
import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError
from models.detect import detect
from models.loader import build, load_checkpoint
from models import keys
from models.sdxl import SDXL, TINY_SDXL, vector_conditioning
from reference import assert_loaded, meta_state_dict, save_safetensors

F64_TOL = 1e-10


@pytest.fixture(scope="module")
def ours(tiny_sdxl_weights):
    return build(TINY_SDXL, tiny_sdxl_weights, "cpu", torch.float64)


@pytest.fixture(scope="module")
def reference(tiny_sdxl_folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_folder), torch_dtype=torch.float64)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_detects_full_size_sdxl_from_shapes():
    found = detect(meta_state_dict(SDXL))
    assert found.config == SDXL
    assert found.config.unet.transformer_depth == (0, 2, 10) and found.config.unet.context_dim == 2048
    assert found.prediction_reason == "the sdxl default"


def test_original_file_loads_and_drops_what_sdxl_never_runs(tiny_sdxl_file, tiny_sdxl_weights):
    loaded = load_checkpoint(tiny_sdxl_file, dtype=torch.float64)
    assert loaded.model.cfg == TINY_SDXL
    assert_loaded(loaded.model, tiny_sdxl_weights)


def test_diffusers_folder_loads_exactly(tiny_sdxl_folder, tiny_sdxl_weights):
    loaded = load_checkpoint(tiny_sdxl_folder, dtype=torch.float64)
    assert loaded.model.cfg == TINY_SDXL
    assert_loaded(loaded.model, tiny_sdxl_weights)


def test_refiner_and_inpainting_refused_naming_what_was_found(tiny_sdxl_original, tmp_path):
    unet_in = "model.diffusion_model.input_blocks.0.0.weight"
    refiner = {k.replace(keys.SDXL_OPENCLIP, "conditioner.embedders.0.model."): v for k, v in tiny_sdxl_original.items()
               if not k.startswith(keys.SDXL_CLIP)}
    cases = {"refiner": (refiner, "an SDXL refiner \\(OpenCLIP-only text conditioning"),
             "inpaint": ({**tiny_sdxl_original, unet_in: torch.zeros(64, 9, 3, 3)}, "a UNet with 9 input channels"),
             "one-tower": ({k: v for k, v in tiny_sdxl_original.items() if not k.startswith(keys.SDXL_OPENCLIP)},
                           f"an SDXL-like checkpoint with {keys.SDXL_CLIP}, model.diffusion_model.label_emb.")}
    for name, (sd, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_safetensors(sd, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_clip_tower_is_transformers_penultimate_hidden_state(ours, reference):
    ids = torch.randint(0, TINY_SDXL.text.vocab_size, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        got = ours.text_encoder.embedders[0](ids)
    assert (got - expected).abs().max().item() <= F64_TOL


def test_openclip_tower_penultimate_and_pooled_match_transformers(ours, reference):
    ids = torch.randint(1, 49407, (3, 77), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[0, 5:], ids[1, 40:], ids[2, -1] = 49406, 0, 0, 49407
    ids[0, 4], ids[1, 39] = 49407, 49407
    with torch.no_grad():
        expected = reference.text_encoder_2(ids, output_hidden_states=True)
        context, pooled = ours.text_encoder.embedders[1](ids)
    assert (context - expected.hidden_states[-2]).abs().max().item() <= F64_TOL
    assert (pooled - expected.text_embeds).abs().max().item() <= F64_TOL


def test_text_time_unet_matches_diffusers(ours, reference):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 12, generator=g, dtype=torch.float64)
    context = torch.randn(2, 77, TINY_SDXL.unet.context_dim, generator=g, dtype=torch.float64)
    pooled = torch.randn(2, TINY_SDXL.text2.projection_dim, generator=g, dtype=torch.float64)
    time_ids = torch.tensor([[1024.0, 768, 0, 16, 1024, 1024], [64, 96, 8, 0, 64, 96]], dtype=torch.float64)
    t = torch.tensor([999, 11])
    with torch.no_grad():
        expected = reference.unet(x, t, encoder_hidden_states=context,
                                  added_cond_kwargs=dict(text_embeds=pooled, time_ids=time_ids)).sample
        got = ours.unet(x, t, context, y=vector_conditioning(pooled, time_ids, TINY_SDXL.unet.adm_in_channels))
    assert (got - expected).abs().max().item() <= F64_TOL


def test_float16_decode_upcasts_where_activations_overflow(tiny_sdxl_weights, monkeypatch):
    """The decoder's first activations exceed float16's 65504 (weights that float16 still holds): with half arithmetic
    (a GPU's, forced here) the float16 weights still decode to finite pictures close to a float32 decode; without the
    upcast they do not."""
    import dataclasses

    import models.vae

    weights = dict(tiny_sdxl_weights)
    for name in ("first_stage_model.decoder.conv_in.weight", "first_stage_model.decoder.conv_in.bias"):
        weights[name] = weights[name] * 3e4
    half, wide = (build(TINY_SDXL, weights, "cpu", dtype).vae for dtype in (torch.float16, torch.float32))
    assert all(torch.isfinite(w).all() for w in half.state_dict().values())
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    assert wide.decoder.conv_in(wide.post_quant_conv(z)).abs().max() > 65504
    monkeypatch.setattr(models.vae, "compute_dtype", lambda weight: weight.dtype)
    image = half.decode(z.half())
    assert image.dtype == torch.float16 and torch.isfinite(image).all()
    assert (image.float() - wide.decode(z)).abs().max().item() <= 1e-2
    half.cfg = dataclasses.replace(half.cfg, force_upcast=False)
    assert not torch.isfinite(half.decode(z.half())).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_float16_file_loads_as_other_dtypes_and_samples(tiny_sdxl_original, tiny_sdxl_weights, tmp_path, dtype):
    """A float16 single file (as SDXL base ships) read as bfloat16 and float32: every weight is the float16 value cast
    once, and the pipeline draws finite pictures."""
    from sld.pipeline import Pipeline

    path = tmp_path / "sd_xl_half.safetensors"
    save_safetensors({k: v.half() if v.is_floating_point() else v for k, v in tiny_sdxl_original.items()}, path)
    loaded = load_checkpoint(path, dtype=dtype)
    assert_loaded(loaded.model, {k: v.half().to(dtype) for k, v in tiny_sdxl_weights.items()}, dtype=dtype)
    out = Pipeline(loaded.model)("a photo of a cat", height=64, width=64, steps=2, safety="max", seed=0, output_type="np")
    assert np.isfinite(out.images).all()


def test_a_file_saved_from_the_model_loads_back(ours, tmp_path):
    """Our state dict (the CLIP tower already one layer short, no final norm) round-trips: nothing more is dropped."""
    path = tmp_path / "saved.safetensors"
    save_safetensors(ours.state_dict(), path)
    loaded = load_checkpoint(path, dtype=torch.float64)
    assert loaded.model.cfg == TINY_SDXL
    assert_loaded(loaded.model, ours.state_dict())

