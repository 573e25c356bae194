"""LoRAs and textual-inversion embeddings on SDXL against diffusers' StableDiffusionXLPipeline (`load_lora_weights`
+ `fuse_lora`; `load_textual_inversion` once per tower), float64, on the tiny random SDXL file and the diffusers folder
diffusers' own single-file loader made from it.

Formats: kohya with diffusers-named UNet modules and `lora_te1_` / `lora_te2_` towers, kohya with sgm (CompVis) UNet
names (`lora_unet_input_blocks_*`, as kohya trains SDXL; diffusers remaps them), and diffusers/PEFT `unet.`,
`text_encoder.`, `text_encoder_2.`. The first tower's last CLIP layer, which SDXL never runs, is in every file: it is
accepted and changes nothing, in both. Weights: diffusers' fused folder weights, read through our folder converter
(itself checked against diffusers' single-file converter in tests/test_sdxl.py), equal ours within 1e-12 and change
exactly the same tensors. Embeddings: A1111/kohya SDXL files (`clip_l` and `clip_g`, one tensor per tower), token
ids as diffusers' tokenizers give them after its multi-vector prompt rewrite. Images: DDIM, 12 steps, within 1e-6,
and visibly changed (mean absolute change over 0.02).
"""
import numpy as np
import pytest
import torch

import sld
from adapter_files import layers, lora_tensors
from models import keys
from models.diffusers_keys import (sdxl_text_encoder_2_to_compvis, sdxl_text_encoder_to_compvis, unet_to_compvis,
                                   vae_to_compvis)
from models.lora import AdapterError
from models.sdxl import drop_unused_sdxl_text
from reference import float64_scheduler, save_safetensors

IMAGE_TOL = 1e-6
WEIGHT_TOL = 1e-12
VISIBLE = 0.02
STEPS = 12
SIZE = 64
PROMPT = "a photo of a cat"
TEXT_MODEL = "text_model."


@pytest.fixture(scope="module")
def base(tiny_sdxl_folder):
    """StableDiffusionXLPipeline from the folder (float64, DDIM with our float64 schedule, leading spacing)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_folder), torch_dtype=torch.float64)
    return pipe.components


def reference(base, loras=()):
    """A fresh pipeline over copies of the parts, each LoRA loaded, fused at its scale and unloaded."""
    import copy

    from diffusers import StableDiffusionXLPipeline

    parts = {k: copy.deepcopy(v) for k, v in base.items()}
    parts["scheduler"] = float64_scheduler("DDIMScheduler", timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    for path, scale in loras:
        pipe.load_lora_weights(str(path))
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()
    return pipe


def latents() -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def our_images(pipe) -> np.ndarray:
    return pipe(PROMPT, height=SIZE, width=SIZE, steps=STEPS, sampler="ddim", latents=latents(), safety=None,
                output_type="np").images


def reference_images(pipe) -> np.ndarray:
    return pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents(),
                output_type="np").images


def text_layers(encoder) -> list:
    """A transformers text tower's encoder Linears, named under `text_model.` (transformers 5 drops that level)."""
    return [(TEXT_MODEL + name.removeprefix(TEXT_MODEL), module) for name, module in layers(encoder, "encoder.")]


def write(path, fmt: str, unet_modules, text1, text2, seed: int, alpha: float | None = None) -> str:
    prefixes = {"kohya": ("lora_unet_", "lora_te1_", "lora_te2_"),
                "peft": ("unet.", "text_encoder.", "text_encoder_2.")}[fmt]
    sd = {}
    for offset, (modules, prefix) in enumerate(zip((unet_modules, text1, text2), prefixes)):
        sd |= lora_tensors(modules, fmt, prefix, seed + offset, alpha=alpha)
    save_safetensors(sd, path)
    return str(path)


def compvis(pipe) -> dict[str, torch.Tensor]:
    """A diffusers SDXL pipeline's weights in our CompVis layout, through the folder converter."""
    sd = {**unet_to_compvis(pipe.unet.state_dict()), **vae_to_compvis(pipe.vae.state_dict()),
          **sdxl_text_encoder_to_compvis(pipe.text_encoder.state_dict()),
          **sdxl_text_encoder_2_to_compvis(pipe.text_encoder_2.state_dict())}
    return drop_unused_sdxl_text(sd)


@pytest.fixture(scope="module")
def base_images(tiny_sdxl_file):
    return our_images(sld.load(str(tiny_sdxl_file), dtype=torch.float64))


@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_every_module_merges_as_diffusers_fuses_it(tiny_sdxl_file, base, tmp_path, fmt):
    unet, text1, text2 = base["unet"], base["text_encoder"], base["text_encoder_2"]
    assert any(".layers.2." in name for name, _ in text_layers(text1))  # the CLIP layer SDXL never runs
    # diffusers' kohya converter cannot name add_embedding in diffusers' spelling (it drops the index of any name with
    # "emb"); kohya's SDXL files name it label_emb (sgm), tested below
    unet_modules = [(name, m) for name, m in layers(unet) if fmt == "peft" or not name.startswith("add_embedding")]
    lora = write(tmp_path / f"all-{fmt}.safetensors", fmt, unet_modules, text_layers(text1), text_layers(text2),
                 seed=10, alpha=2)
    ours = sld.load(str(tiny_sdxl_file), dtype=torch.float64, loras=[(lora, 0.6)]).model.state_dict()
    theirs = compvis(reference(base, [(lora, 0.6)]))
    before = compvis(reference(base))
    assert set(ours) == set(theirs)
    assert max((ours[k] - theirs[k]).abs().max().item() for k in theirs) <= WEIGHT_TOL
    changed = {k for k in ours if not torch.equal(ours[k], before[k])}
    assert changed == {k for k in theirs if not torch.equal(theirs[k], before[k])}
    assert any(k.startswith(keys.SDXL_OPENCLIP) for k in changed) and any(k.startswith(keys.UNET) for k in changed)
    assert any(k.startswith(keys.SDXL_CLIP) for k in changed)


def test_sgm_named_and_peft_loras_add_up_in_the_images(tiny_sdxl_file, base, base_images, tmp_path):
    """kohya's SDXL files name the UNet after sgm (CompVis): our own module names."""
    ours_model = sld.load(str(tiny_sdxl_file), dtype=torch.float64).model
    sgm = [(name.removeprefix(keys.UNET), module) for name, module in layers(ours_model, keys.UNET)
           if any(block in name for block in ("input_blocks.4.", "middle_block.", "output_blocks.2.", "label_emb."))]
    assert any(".transformer_blocks." in name for name, _ in sgm) and any(".in_layers." in name for name, _ in sgm)
    unet, text1, text2 = base["unet"], base["text_encoder"], base["text_encoder_2"]
    first = write(tmp_path / "sgm.safetensors", "kohya", sgm, text_layers(text1)[:6], [], seed=20, alpha=3)
    second = write(tmp_path / "peft.safetensors", "peft", layers(unet, "attn2"), [], text_layers(text2), seed=30)
    loras = [(first, 0.6), (second, 0.8)]
    got = our_images(sld.load(str(tiny_sdxl_file), dtype=torch.float64, loras=loras))
    expected = reference_images(reference(base, loras))
    assert abs(got - expected).max() <= IMAGE_TOL
    assert abs(got - base_images).mean() > VISIBLE


def vectors(count: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(count, width, generator=generator, dtype=torch.float64) / width ** 0.5


def write_embedding(path, count: int, seed: int) -> str:
    """An SDXL embedding: clip_l for the CLIP tower (width 64 here), clip_g for the OpenCLIP one (128)."""
    save_safetensors({"clip_l": vectors(count, 64, seed), "clip_g": vectors(count, 128, seed + 1)}, path)
    return str(path)


def with_embeddings(pipe, embeddings):
    """diffusers' recipe for SDXL embeddings: each tensor loaded into its own tower and tokenizer."""
    from safetensors.torch import load_file

    for path, token in embeddings:
        tensors = load_file(path)
        pipe.load_textual_inversion(tensors["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
    return pipe


def test_embeddings_in_prompt_and_negative_match_diffusers(tiny_sdxl_file, base, tmp_path):
    duo = write_embedding(tmp_path / "duo.safetensors", 2, seed=40)
    negative = write_embedding(tmp_path / "sdxlneg.safetensors", 1, seed=50)
    prompt = "a <duo> painting of a cat"
    ours = sld.load(str(tiny_sdxl_file), dtype=torch.float64, embeddings=[(duo, "<duo>"), negative])
    theirs = with_embeddings(reference(base), [(duo, "<duo>"), (negative, "sdxlneg")])
    for tokenizer, their_tokenizer in zip(ours.tokenizers, (theirs.tokenizer, theirs.tokenizer_2)):
        rewritten = theirs.maybe_convert_prompt(prompt, their_tokenizer)
        expected = their_tokenizer(rewritten, padding="max_length", max_length=77).input_ids
        assert tokenizer(prompt)[0].tolist() == expected and 49409 in expected
    kwargs = dict(negative_prompt="sdxlneg", height=SIZE, width=SIZE, latents=latents(), output_type="np")
    got = ours(prompt, steps=STEPS, sampler="ddim", safety=None, **kwargs).images
    expected = theirs(prompt, num_inference_steps=STEPS, guidance_scale=7.5, **kwargs).images
    assert abs(got - expected).max() <= IMAGE_TOL
    plain = sld.load(str(tiny_sdxl_file), dtype=torch.float64)
    assert abs(got - plain("a painting of a cat", steps=STEPS, sampler="ddim", safety=None, **kwargs).images
               ).mean() > VISIBLE


def test_bad_sdxl_embeddings_are_named(tiny_sdxl_file, tmp_path):
    files = {"one-tower": {"clip_l": vectors(1, 64, 0)},
             "sd1-style": {"emb_params": vectors(1, 64, 0)},
             "narrow": {"clip_l": vectors(1, 64, 0), "clip_g": vectors(1, 64, 0)},
             "uneven": {"clip_l": vectors(2, 64, 0), "clip_g": vectors(1, 128, 0)}}
    messages = {
        "one-tower": r"one-tower\.safetensors: found tensors \['clip_l'\]; expected an SDXL embedding file with clip_l "
                     r"and clip_g tensors \(one per text tower\)",
        "sd1-style": r"sd1-style\.safetensors: found tensors \['emb_params'\]; expected an SDXL embedding",
        "narrow": r"narrow\.safetensors: clip_g embedding of shape \(1, 64\); the text tower needs \[k, 128\]",
        "uneven": r"uneven\.safetensors: the text towers get different numbers of vectors \(clip_l 2, clip_g 1\)",
    }
    for name, tensors in files.items():
        save_safetensors(tensors, tmp_path / f"{name}.safetensors")
        with pytest.raises(AdapterError, match=messages[name]):
            sld.load(str(tiny_sdxl_file), embeddings=[(str(tmp_path / f"{name}.safetensors"), "<x>")])


def test_embeddings_need_towers_of_one_vocabulary_size(tmp_path):
    """A word's new ids are the same in both towers only when their token tables are the same size."""
    import dataclasses

    from models.adapters import EmbeddingSpec, check_adapters
    from models.loader import model_shapes
    from models.sdxl import TINY_SDXL

    path = write_embedding(tmp_path / "sldconcept.safetensors", 1, seed=60)
    assert len(check_adapters(TINY_SDXL, model_shapes(TINY_SDXL), embeddings=[EmbeddingSpec(path)]).embeddings) == 1
    uneven = dataclasses.replace(TINY_SDXL, text2=dataclasses.replace(TINY_SDXL.text2, vocab_size=49000))
    with pytest.raises(ValueError, match="need text towers of one vocabulary size .* this sdxl model has 49408, 49000"):
        check_adapters(uneven, model_shapes(uneven), embeddings=[EmbeddingSpec(path)])
