"""End to end loading: every file format to the same model tensors, dtype casting, EMA, family detection and its errors."""
import dataclasses

import pytest
import torch

from models.checkpoint import CheckpointError
from models.detect import detect_config
from models.loader import load_checkpoint, random_weights
from models.sd1 import SD1, TINY_SD1
from models.sd2 import TINY_SD2
from reference import assert_loaded, meta_state_dict, save_safetensors

UNET = "model.diffusion_model."


def ema_key(key: str) -> str:
    return "model_ema." + key.removeprefix("model.").replace(".", "")


@pytest.fixture(scope="module")
def single_file(tiny_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "tiny.safetensors"
    save_safetensors(tiny_weights, path)
    return path


def test_safetensors_loads_exactly(single_file, tiny_weights):
    loaded = load_checkpoint(single_file, dtype=torch.float64)
    assert loaded.model.cfg == TINY_SD1 and not loaded.has_ema
    assert_loaded(loaded.model, tiny_weights)


def test_weights_are_cast_once_to_the_requested_dtype(single_file, tiny_weights):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert_loaded(load_checkpoint(single_file, dtype=dtype).model, tiny_weights, dtype)


def test_full_ema_ckpt_with_training_buffers(tiny_weights, tmp_path):
    ema = {ema_key(k): v + 1 for k, v in tiny_weights.items() if k.startswith(UNET)}
    buffers = {"betas": torch.rand(1000), "alphas_cumprod": torch.rand(1000),
               "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None]}
    path = tmp_path / "full-ema.ckpt"
    torch.save({"state_dict": {**tiny_weights, **ema, **buffers, "model_ema.decay": torch.tensor(0.9999),
                               "model_ema.num_updates": torch.tensor(7)}, "global_step": 470000, "epoch": 6}, path)
    regular = load_checkpoint(path, dtype=torch.float64)
    assert regular.has_ema
    assert_loaded(regular.model, tiny_weights)
    with_ema = load_checkpoint(path, dtype=torch.float64, ema=True).model
    assert_loaded(with_ema, {k: v + 1 if k.startswith(UNET) else v for k, v in tiny_weights.items()})


def test_diffusers_folder_loads_exactly(reference_parts, tiny_weights, tmp_path):
    unet, vae, text = reference_parts
    unet.save_pretrained(tmp_path / "unet")
    vae.save_pretrained(tmp_path / "vae")
    text.save_pretrained(tmp_path / "text_encoder")
    assert_loaded(load_checkpoint(tmp_path, dtype=torch.float64).model, tiny_weights)


def test_detects_full_size_sd1_from_shapes():
    assert detect_config(meta_state_dict(SD1)) == SD1


def test_detects_tiny_sd1_and_prediction_override(tiny_weights):
    assert detect_config(tiny_weights) == TINY_SD1
    assert detect_config(tiny_weights, prediction="v").prediction == "v"


def _sd2_text_with_conv_unet(sd):
    sd = {k: v for k, v in sd.items() if not k.startswith("cond_stage_model.")}
    return {**sd, "cond_stage_model.model.token_embedding.weight": torch.zeros(4, 4)}


def _inpainting(sd):
    conv = sd[UNET + "input_blocks.0.0.weight"]
    return {**sd, UNET + "input_blocks.0.0.weight": torch.zeros(conv.shape[0], 9, 3, 3)}


UNSUPPORTED = {
    "sd2 text, sd1 unet": (_sd2_text_with_conv_unet, "a sd2 text encoder with 1x1-conv transformer projections"),
    "sdxl": (lambda sd: {**sd, "conditioner.embedders.0.x": torch.zeros(1)}, "SDXL"),
    "inpainting": (_inpainting, "9 input channels"),
    "vae only": (lambda sd: {k: v for k, v in sd.items() if k.startswith("first_stage_model.")}, "no UNet, text encoder weights"),
    "unrelated": (lambda sd: {"linear.weight": torch.zeros(2, 2)}, "not a complete Stable Diffusion checkpoint"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_files_are_named(tiny_weights, tmp_path, case):
    make, message = UNSUPPORTED[case]
    path = tmp_path / f"{case}.safetensors"
    save_safetensors(make(tiny_weights), path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_wrong_missing_and_unexpected_keys_are_listed(tiny_weights, tmp_path):
    sd = dict(tiny_weights)
    del sd[UNET + "out.2.bias"]
    sd[UNET + "input_blocks.1.0.emb_layers.1.bias"] = torch.zeros(3)
    sd[UNET + "extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_safetensors(sd, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys (1): 'model.diffusion_model.out.2.bias'" in message
    assert "unexpected keys (1): 'model.diffusion_model.extra.weight'" in message
    assert "wrong shapes (1): 'model.diffusion_model.input_blocks.1.0.emb_layers.1.bias (3,) (expected (32,))'" in message


@pytest.mark.parametrize("base", [TINY_SD1, TINY_SD2], ids=["clip", "openclip"])
def test_text_mlp_width_comes_from_the_weights(base, tmp_path):
    """A 64-wide tower with a 100-wide MLP (not a whole multiple of the width) loads exactly."""
    text = dataclasses.replace(base.text, width=64, heads=1, mlp_width=100)
    cfg = dataclasses.replace(base, text=text, unet=dataclasses.replace(base.unet, context_dim=64))
    weights = random_weights(cfg, seed=5)
    path = tmp_path / "odd-mlp.safetensors"
    save_safetensors(weights, path)
    loaded = load_checkpoint(path, dtype=torch.float64)
    assert loaded.model.cfg.text.mlp_width == 100
    assert_loaded(loaded.model, weights)
