"""Diffusers folder -> CompVis keys, checked independently by diffusers' own single-file converters.

The CompVis dict that `read_checkpoint` builds from a folder is fed to
`convert_ldm_{unet,vae,clip}_checkpoint` (CompVis -> diffusers); every tensor must come back
bit-identical to the random-weight model that wrote the folder.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from models.checkpoint import CheckpointError
from models.diffusers_keys import text_encoder_to_compvis, unet_to_compvis, vae_to_compvis
from models.loader import read_checkpoint


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer random, norms and output layers included."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def models():
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            vocab_size=49408,
            hidden_act="quick_gelu",
        )
    )
    return _randomise(unet, 0), _randomise(vae, 1), _randomise(text, 2)


@pytest.fixture(scope="module")
def folder(models, tmp_path_factory):
    """The layout save_pretrained writes: unet/, vae/, text_encoder/ with .safetensors weights."""
    unet, vae, text = models
    root = tmp_path_factory.mktemp("diffusers")
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    return root


def _text_state(text: CLIPTextModel) -> dict[str, torch.Tensor]:
    """transformers 5 drops the `text_model.` level that the CompVis and diffusers converters keep."""
    return {key.removeprefix("text_model."): value for key, value in text.state_dict().items()}


def _assert_same_tensors(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected), (sorted(set(actual) ^ set(expected)))[:10]
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), f"{key} differs (exact equality required)"


def _assert_maps_back(compvis: dict, models, dtype=torch.float32) -> None:
    """CompVis dict -> diffusers via diffusers' converters == the models' own state dicts."""
    unet, vae, text = models
    expected = [
        (convert_ldm_unet_checkpoint(compvis, unet.config), unet.state_dict()),
        (convert_ldm_vae_checkpoint(compvis, vae.config), vae.state_dict()),
        (
            {key.removeprefix("text_model."): value for key, value in convert_ldm_clip_checkpoint(compvis).items()},
            _text_state(text),
        ),
    ]
    for converted, original in expected:
        _assert_same_tensors(converted, {key: value.to(dtype) for key, value in original.items()})
    assert len(compvis) == sum(len(original) for _, original in expected)


def test_safetensors_folder_maps_to_compvis_exactly(folder, models):
    compvis = read_checkpoint(folder)
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(key.startswith(prefixes) for key in compvis)
    assert compvis["model.diffusion_model.output_blocks.2.1.conv.weight"].shape == (64, 64, 3, 3)
    assert compvis["model.diffusion_model.output_blocks.5.2.conv.weight"].shape == (64, 64, 3, 3)
    assert compvis["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    _assert_maps_back(compvis, models)


def test_bin_folder_with_old_text_layout(models, tmp_path):
    """.bin weights, and a transformers-4 text encoder file (`text_model.` level, position_ids)."""
    unet, vae, text = models
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    old_text = {f"text_model.{key}": value for key, value in _text_state(text).items()}
    old_text["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    (tmp_path / "text_encoder").mkdir()
    torch.save(old_text, tmp_path / "text_encoder" / "pytorch_model.bin")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    _assert_maps_back(read_checkpoint(tmp_path), models)


def test_fp16_variant_only_folder_keeps_half_precision(models, tmp_path):
    unet, vae, text = models
    for name, model in (("unet", unet), ("vae", vae)):
        state = {key: value.half() for key, value in model.state_dict().items()}
        (tmp_path / name).mkdir()
        save_file(state, tmp_path / name / "diffusion_pytorch_model.fp16.safetensors")
    (tmp_path / "text_encoder").mkdir()
    text_half = {key: value.half() for key, value in _text_state(text).items()}
    save_file(text_half, tmp_path / "text_encoder" / "model.fp16.safetensors")
    compvis = read_checkpoint(tmp_path)
    assert {tensor.dtype for tensor in compvis.values()} == {torch.float16}
    _assert_maps_back(compvis, models, dtype=torch.float16)


def test_old_vae_attention_names_map_like_new_ones(models):
    vae = models[1].state_dict()
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, value in vae.items():
        for new, old in old_names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        renamed[key] = value
    assert renamed.keys() != vae.keys()
    _assert_same_tensors(vae_to_compvis(renamed), vae_to_compvis(vae))


def test_uneven_down_blocks_are_refused(models):
    state = {**models[0].state_dict(), "down_blocks.1.resnets.2.norm1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"same number of resnets.*\{0: 2, 1: 3, 2: 2, 3: 2\}"):
        unet_to_compvis(state)
    with pytest.raises(CheckpointError, match="no down_blocks"):
        unet_to_compvis({"conv_in.weight": torch.zeros(1)})


def test_missing_part_lists_what_was_looked_for(folder, tmp_path):
    for part in ("unet", "text_encoder"):
        shutil.copytree(folder / part, tmp_path / part)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "missing vae/" in message
    for name in ("diffusion_pytorch_model.safetensors", "pytorch_model.bin", "model.fp16.safetensors"):
        assert name in message


def test_unknown_key_in_folder_names_file_and_key(folder, tmp_path):
    for part in ("vae", "text_encoder"):
        shutil.copytree(folder / part, tmp_path / part)
    unet = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    unet["down_blocks.0.mystery.weight"] = torch.zeros(1)
    (tmp_path / "unet").mkdir()
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    save_file(unet, weights)
    with pytest.raises(CheckpointError, match="down_blocks.0.mystery.weight") as error:
        read_checkpoint(tmp_path)
    assert str(weights) in str(error.value)


@pytest.mark.parametrize(
    ("convert", "model_index", "extra"),
    [
        (unet_to_compvis, 0, "down_blocks.0.resnets.0.norm3.weight"),
        (unet_to_compvis, 0, "up_blocks.0.resnets.3.norm1.weight"),  # 3 resnets per up level
        (unet_to_compvis, 0, "mid_block.attentions.1.norm.weight"),
        (vae_to_compvis, 1, "encoder.mid_block.attentions.0.to_x.weight"),
        (text_encoder_to_compvis, 2, "text_projection.weight"),
    ],
)
def test_unknown_keys_are_listed_with_a_count(models, convert, model_index, extra):
    model = models[model_index]
    state = _text_state(model) if model_index == 2 else model.state_dict()
    unknown = [extra] + [f"unknown.{index}.weight" for index in range(6)]
    with pytest.raises(CheckpointError) as error:
        convert({**state, **{key: torch.zeros(1) for key in unknown}})
    message = str(error.value)
    assert "(7)" in message and "... and 2 more" in message
    assert repr(sorted(unknown)[0]) in message
