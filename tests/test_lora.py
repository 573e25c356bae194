"""LoRAs merged at load against diffusers (`load_lora_weights` + `fuse_lora(lora_scale=...)`), float64, on the tiny
random SD 1 model with random adapters as large as the weights they change.

The key maps are checked through diffusers' own converters: a LoRA over every Linear and Conv2d of diffusers' UNet and
transformers' text model, named from those modules, goes through diffusers' kohya converter and PEFT fusing; our merged
CompVis weights go through diffusers' single-file converters; every tensor must agree. Images: DDIM, 12 steps, within
1e-6, and the adapters must change them visibly (mean absolute change over 0.02).
"""
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint

import sld
from adapter_files import diffusers_pipeline, layers, write_lora
from models.checkpoint import CheckpointError
from models.lora import AdapterError
from reference import diffusers_sld_kwargs, float64_scheduler, reference_pipeline, save_safetensors

IMAGE_TOL = 1e-6
WEIGHT_TOL = 1e-12
VISIBLE = 0.02  # mean absolute change of the [0, 1] images an adapter must cause
STEPS = 12
SIZE = 64
PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def checkpoint(tiny_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "tiny.safetensors"
    save_safetensors(tiny_weights, path)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("lora_files")


def load(checkpoint, **adapters):
    return sld.load(checkpoint, dtype=torch.float64, **adapters)


def latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def our_images(pipe, safety=None, steps=STEPS) -> np.ndarray:
    return pipe(PROMPT, height=SIZE, width=SIZE, steps=steps, sampler="ddim", latents=latents(), safety=safety,
                output_type="np").images


def reference_images(pipe) -> np.ndarray:
    return pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents(),
                output_type="np").images


@pytest.fixture(scope="module")
def base_images(checkpoint):
    return our_images(load(checkpoint))


def assert_same_and_visible(got, expected, base):
    assert abs(got - expected).max() <= IMAGE_TOL
    assert abs(got - base).mean() > VISIBLE


@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_every_module_merges_as_diffusers_fuses_it(checkpoint, folder, reference_parts, reference_tokenizer,
                                                   tiny_weights, fmt):
    unet, _, text = reference_parts
    lora = write_lora(folder / f"all-{fmt}.safetensors", layers(unet), layers(text), fmt, seed=10, alpha=2)
    reference = diffusers_pipeline(reference_parts, reference_tokenizer, loras=[(lora, 0.6)])
    merged = load(checkpoint, loras=[(lora, 0.6)]).model.state_dict()
    for ours, theirs, base in (
            (convert_ldm_unet_checkpoint(merged, unet.config), reference.unet.state_dict(),
             convert_ldm_unet_checkpoint(tiny_weights, unet.config)),
            (convert_ldm_clip_checkpoint(merged), reference.text_encoder.state_dict(),
             convert_ldm_clip_checkpoint(tiny_weights))):
        ours, base = ({k.removeprefix("text_model."): v for k, v in sd.items()} for sd in (ours, base))
        assert set(ours) == set(theirs)
        assert max((ours[k] - theirs[k]).abs().max().item() for k in theirs) <= WEIGHT_TOL
        changed = {k for k in ours if not torch.equal(ours[k], base[k])}
        assert changed == {k for k in ours if k.endswith(".weight") and ours[k].ndim >= 2 and "embeddings." not in k}


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_one_lora(checkpoint, folder, reference_parts, reference_tokenizer, base_images, scale):
    unet, _, text = reference_parts
    lora = write_lora(folder / "attention.safetensors", layers(unet, "attentions"), layers(text, "self_attn"),
                      "kohya", seed=20, alpha=2)
    got = our_images(load(checkpoint, loras=[(lora, scale)]))
    expected = reference_images(diffusers_pipeline(reference_parts, reference_tokenizer, loras=[(lora, scale)]))
    assert_same_and_visible(got, expected, base_images)


def test_two_loras_in_two_formats_add_up(checkpoint, folder, reference_parts, reference_tokenizer, base_images):
    unet, _, text = reference_parts
    first = write_lora(folder / "kohya.safetensors", layers(unet, "attn2"), layers(text, "mlp"), "kohya", seed=30)
    second = write_lora(folder / "peft.safetensors", layers(unet, "resnets"), layers(text, "q_proj"), "peft", seed=40)
    loras = [(first, 0.8), (second, 0.5)]
    got = our_images(load(checkpoint, loras=loras))
    expected = reference_images(diffusers_pipeline(reference_parts, reference_tokenizer, loras=loras))
    assert_same_and_visible(got, expected, base_images)


def test_locon_convolutions(checkpoint, folder, reference_parts, reference_tokenizer, base_images):
    unet, _, _ = reference_parts
    convs = [(name, m) for name, m in layers(unet, kinds=(torch.nn.Conv2d,)) if m.kernel_size == (3, 3)]
    lora = write_lora(folder / "locon.safetensors", convs, [], "kohya", seed=50, alpha=3)
    got = our_images(load(checkpoint, loras=[lora]))
    expected = reference_images(diffusers_pipeline(reference_parts, reference_tokenizer, loras=[(lora, 1.0)]))
    assert_same_and_visible(got, expected, base_images)


def test_sld_medium_on_a_fused_lora_matches_the_safe_pipeline(checkpoint, folder, reference_parts,
                                                               reference_tokenizer):
    unet, _, text = reference_parts
    lora = write_lora(folder / "sld.safetensors", layers(unet, "attentions"), layers(text), "kohya", seed=60)
    fused = diffusers_pipeline(reference_parts, reference_tokenizer, loras=[(lora, 0.7)])
    safe = reference_pipeline((fused.unet, fused.vae, fused.text_encoder), reference_tokenizer,
                              float64_scheduler("DDIMScheduler"))
    steps, preset = 20, sld.PRESETS["medium"]
    expected = safe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=7.5, latents=latents(),
                    output_type="np", **diffusers_sld_kwargs(preset)).images
    got = our_images(load(checkpoint, loras=[(lora, 0.7)]), safety="medium", steps=steps)
    base = our_images(load(checkpoint), safety="medium", steps=steps)
    assert_same_and_visible(got, expected, base)


def write(path, tensors) -> str:
    save_safetensors(tensors, path)
    return str(path)


def test_bad_loras_are_named_before_the_model_changes(checkpoint, folder, reference_parts, monkeypatch):
    """Every file is checked against the detected shapes before the model is built (building is made to fail here),
    a good LoRA first included: nothing is ever applied in part."""
    import models.loader

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the adapters were checked")

    unet, _, text = reference_parts
    good = write_lora(folder / "good.safetensors", layers(unet, "attn1"), [], "kohya", seed=70)
    down, up = torch.randn(4, 64, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64)
    cases = {
        "nomatch": ({"lora_unet_down_blocks_9_proj_in.lora_down.weight": down,
                     "lora_unet_down_blocks_9_proj_in.lora_up.weight": up},
                    r"nomatch\.safetensors: LoRA modules that match nothing in the model \(1/1\): "
                    r"'lora_unet_down_blocks_9_proj_in'"),
        "shape": ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": down,
                   "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": up},
                  r"shape\.safetensors: LoRA weights of the wrong shape \(1\): "
                  r"'lora_te_text_model_encoder_layers_0_self_attn_q_proj \(delta \(64, 64\) for a weight of "
                  r"\(128, 128\)\)'"),
        "rank": ({"unet.conv_in.lora_A.weight": torch.randn(4, 4, 3, 3), "unet.conv_in.lora_B.weight": up},
                 r"rank\.safetensors: LoRA weights of the wrong shape \(1\): 'unet.conv_in \(down \(4, 4, 3, 3\) "
                 r"and up \(64, 4\) are not"),
        "loha": ({"lora_unet_conv_in.hada_w1_a": down},
                 r"loha\.safetensors: keys that are not LoRA weights \(1\): 'lora_unet_conv_in.hada_w1_a'"),
        "half": ({"lora_unet_conv_in.lora_down.weight": down},
                 r"half\.safetensors: modules without both a down and an up weight \(1\): 'lora_unet_conv_in'"),
    }
    monkeypatch.setattr(models.loader, "build", no_model)
    for name, (tensors, message) in cases.items():
        bad = write(folder / f"{name}.safetensors", tensors)
        with pytest.raises(AdapterError, match=message):
            load(checkpoint, loras=[good, bad])
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: no such file"):
        load(checkpoint, loras=[str(folder / "missing.safetensors")])
    for bad in [("a.safetensors", "x"), ("a", 1, 2), 3]:
        with pytest.raises(ValueError, match=r"loras: .* is not allowed; give a path or a \(path, scale\) pair"):
            sld.load("tiny", loras=[bad])


def test_metadata_alpha_of_diffusers_files(checkpoint, folder, reference_parts, tiny_weights):
    """diffusers' save_lora_weights keeps alpha in the safetensors metadata: alpha 8 on rank 4 doubles the delta."""
    from safetensors.torch import load_file, save_file

    unet, _, _ = reference_parts
    plain = write_lora(folder / "plain.safetensors", layers(unet, "attn1.to_q"), [], "peft", seed=80)
    tensors = load_file(plain)
    metadata = {"lora_adapter_metadata": '{"unet.lora_alpha": 8, "unet.r": 4}'}
    save_file(tensors, folder / "meta.safetensors", metadata=metadata)
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    once = load(checkpoint, loras=[plain]).model.state_dict()[key] - tiny_weights[key]
    twice = load(checkpoint, loras=[str(folder / "meta.safetensors")]).model.state_dict()[key] - tiny_weights[key]
    assert (twice - 2 * once).abs().max().item() <= WEIGHT_TOL and once.abs().max().item() > 0.1


def test_sd2_unet_and_fused_openclip_attention(reference_sd2_parts, tiny_sd2_original, reference_tokenizer,
                                               tmp_path):
    """SD 2: linear transformer projections, and q/k/v LoRAs landing in thirds of OpenCLIP's fused in_proj_weight
    (diffusers' fused text weights brought to open_clip names by models/diffusers_keys.py, itself checked against
    diffusers' `convert_open_clip_checkpoint` in tests/test_sd2.py)."""
    from models.diffusers_keys import clip_to_openclip, text_encoder_to_compvis

    unet, _, text = reference_sd2_parts
    save_safetensors(tiny_sd2_original, tmp_path / "sd2.safetensors")
    lora = write_lora(tmp_path / "sd2-lora.safetensors", layers(unet), layers(text), "kohya", seed=90, alpha=2)
    reference = diffusers_pipeline(reference_sd2_parts, reference_tokenizer, loras=[(lora, 0.6)])
    merged = load(str(tmp_path / "sd2.safetensors"), loras=[(lora, 0.6)]).model.state_dict()
    expected_text = clip_to_openclip(text_encoder_to_compvis(reference.text_encoder.state_dict()))
    got_unet = convert_ldm_unet_checkpoint(merged, unet.config)
    got_text = {k: merged[k] for k in expected_text}
    for got, expected in ((got_unet, reference.unet.state_dict()), (got_text, expected_text)):
        assert max((got[k] - expected[k]).abs().max().item() for k in expected) <= WEIGHT_TOL
    key = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    assert (merged[key] - tiny_sd2_original[key]).abs().min(dim=1).values.gt(0).all()  # every row of q, k and v moved
