"""Textual-inversion embeddings against diffusers' `load_textual_inversion`, float64, on the tiny random SD 1 model.

A one-vector A1111 `.pt` (read by the safe unpickler), a two-vector A1111 `.safetensors` (`emb_params`) and a diffusers
`learned_embeds` file, with vectors three times as large as the token table's rows: token ids as transformers'
tokenizer gives them after diffusers' multi-vector prompt rewrite, images (DDIM, 12 steps) within 1e-6, and visibly
different from the model without them (mean absolute change over 0.02).
"""
import pytest
import torch
from safetensors.torch import save_file

import sld
from adapter_files import diffusers_pipeline, layers, write_lora
from models.adapters import EmbeddingSpec
from models.checkpoint import CheckpointError
from models.lora import AdapterError
from reference import save_safetensors
from test_lora import IMAGE_TOL, SIZE, STEPS, VISIBLE, latents

WIDTH = 128  # the tiny model's text width


def vectors(count: int, seed: int, width: int = WIDTH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(count, width, generator=generator, dtype=torch.float64) / width ** 0.5


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_weights):
    folder = tmp_path_factory.mktemp("embeddings")
    save_safetensors(tiny_weights, folder / "tiny.safetensors")
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(1, 1)}, "name": "trained-name",
                "step": 500, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny"}, folder / "sld-style.pt")
    save_file({"emb_params": vectors(2, 2)}, folder / "duo.safetensors")
    save_file({"<learned>": vectors(1, 3)[0]}, folder / "learned_embeds.safetensors")
    return folder


def run(pipe, prompt: str, ours: bool):
    if ours:
        return pipe(prompt, height=SIZE, width=SIZE, steps=STEPS, sampler="ddim", latents=latents(), safety=None,
                    output_type="np").images
    return pipe(prompt, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=7.5, latents=latents(),
                output_type="np").images


CASES = {
    "one vector, A1111 .pt, token from the file name": ([("sld-style.pt", None)], [("sld-style.pt", "sld-style")],
                                                         "a photo of sld-style"),
    "two vectors, A1111 .safetensors, token given": ([("duo.safetensors", "<duo>")], [("duo.safetensors", "<duo>")],
                                                     "a <duo> painting of a cat"),
    "diffusers learned_embeds and the two-vector file together": (
        [("learned_embeds.safetensors", "<learned>"), ("duo.safetensors", "<duo>")],
        [("learned_embeds.safetensors", "<learned>"), ("duo.safetensors", "<duo>")],
        "<duo> and <learned>, a <duo> cat"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_embeddings_match_diffusers(files, reference_parts, reference_tokenizer, case):
    ours_spec, theirs_spec, prompt = CASES[case]
    given = [(str(files / name), token) if token else str(files / name) for name, token in ours_spec]
    ours = sld.load(str(files / "tiny.safetensors"), dtype=torch.float64, embeddings=given)
    theirs = diffusers_pipeline(reference_parts, reference_tokenizer,
                                embeddings=[(files / name, token) for name, token in theirs_spec])
    rewritten = theirs.maybe_convert_prompt(prompt, theirs.tokenizer)
    expected_ids = theirs.tokenizer(rewritten, padding="max_length", max_length=77).input_ids
    assert ours.tokenizer(prompt)[0].tolist() == expected_ids
    assert len(set(expected_ids) - set(reference_tokenizer(prompt).input_ids)) >= 1
    got = run(ours, prompt, ours=True)
    assert abs(got - run(theirs, prompt, ours=False)).max() <= IMAGE_TOL
    base = sld.load(str(files / "tiny.safetensors"), dtype=torch.float64)
    assert abs(got - run(base, prompt, ours=True)).mean() > VISIBLE


def test_lora_and_embedding_together(files, reference_parts, reference_tokenizer, tmp_path):
    unet, _, text = reference_parts
    lora = write_lora(tmp_path / "style.safetensors", layers(unet, "attn2"), layers(text, "mlp"), "kohya", seed=7)
    prompt = "a <duo> painting of a cat"
    ours = sld.load(str(files / "tiny.safetensors"), dtype=torch.float64, loras=[(lora, 0.8)],
                    embeddings=[(str(files / "duo.safetensors"), "<duo>")])
    theirs = diffusers_pipeline(reference_parts, reference_tokenizer, loras=[(lora, 0.8)],
                                embeddings=[(files / "duo.safetensors", "<duo>")])
    assert abs(run(ours, prompt, ours=True) - run(theirs, prompt, ours=False)).max() <= IMAGE_TOL


def test_vectors_take_new_rows_and_positions(tmp_path):
    save_file({"emb_params": vectors(2, 2)}, tmp_path / "sldduo.safetensors")
    pipe = sld.load("tiny", embeddings=[str(tmp_path / "sldduo.safetensors")])
    assert pipe.embeddings == (EmbeddingSpec(str(tmp_path / "sldduo.safetensors")),) and pipe.loras == ()
    table = pipe.text_encoder.token_embedding.weight
    assert table.shape[0] == 49408 + 2 and torch.equal(table[-2:], vectors(2, 2).float())
    ids = pipe.tokenizer("A SLDDUO cat")[0].tolist()
    assert ids[:5] == [49406, 320, 49408, 49409, 2368]
    assert pipe.tokenizer.decode(ids) == "a sldduo cat"


def test_bad_embeddings_are_named_before_the_model_is_built(files, tmp_path, monkeypatch):
    import models.loader

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the embeddings were checked")

    monkeypatch.setattr(models.loader, "build", no_model)
    checkpoint = str(files / "tiny.safetensors")
    save_file({"emb_params": vectors(2, 9, width=64)}, tmp_path / "narrow.safetensors")
    save_file({"a": vectors(1, 9), "b": vectors(1, 9)}, tmp_path / "two.safetensors")
    save_file({"emb_params": vectors(1, 9)}, tmp_path / "cat.safetensors")
    cases = [
        ([str(tmp_path / "narrow.safetensors")], r"narrow\.safetensors: embedding of shape \(2, 64\); the text tower "
                                                 r"needs \[k, 128\]"),
        ([str(tmp_path / "two.safetensors")], r"two\.safetensors: found tensors \['a', 'b'\]; expected an A1111"),
        ([str(tmp_path / "cat.safetensors")], r"cat\.safetensors: embedding token 'cat' is already a word of the "
                                              r"tokenizer; give another one"),
        ([(str(files / "duo.safetensors"), "<x>"), (str(files / "sld-style.pt"), "<X>")],
         r"sld-style\.pt: embedding token '<X>' is already a word of the tokenizer or of another embedding"),
        ([(str(files / "duo.safetensors"), "two words")], r"duo\.safetensors: embedding token 'two words' must be one "
                                                          r"word without spaces"),
    ]
    for embeddings, message in cases:
        with pytest.raises(AdapterError, match=message):
            sld.load(checkpoint, dtype=torch.float64, embeddings=embeddings)
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such file"):
        sld.load("tiny", embeddings=[str(tmp_path / "missing.pt")])
    with pytest.raises(ValueError, match=r"embeddings: .* is not allowed; give a path or a \(path, token\) pair"):
        sld.load("tiny", embeddings=[("duo.safetensors", 3)])


def test_pickled_code_is_refused(tmp_path):
    """A1111 .pt files go through the checkpoint loader's safe unpickler: a global outside its list is refused."""
    import datetime

    torch.save({"string_to_param": {"*": vectors(1, 0)}, "date": datetime.date(2023, 1, 1)}, tmp_path / "sldevil.pt")
    with pytest.raises(CheckpointError, match=r"sldevil\.pt: refused to unpickle the global 'datetime.date'"):
        sld.load("tiny", embeddings=[str(tmp_path / "sldevil.pt")])


def test_sd2_openclip_tower_takes_embeddings(reference_sd2_parts, tiny_sd2_original, reference_tokenizer, tmp_path):
    """SD 2: the vectors become rows of OpenCLIP's token table; the context matches transformers' text model after
    diffusers' load_textual_inversion, for the same ids (within 1e-10)."""
    from models.sd2 import TINY_SD2

    save_safetensors(tiny_sd2_original, tmp_path / "sd2.safetensors")
    width = TINY_SD2.text.width
    save_file({"emb_params": vectors(2, 11, width=width)}, tmp_path / "duo.safetensors")
    ours = sld.load(str(tmp_path / "sd2.safetensors"), dtype=torch.float64,
                    embeddings=[(str(tmp_path / "duo.safetensors"), "<duo>")])
    theirs = diffusers_pipeline(reference_sd2_parts, reference_tokenizer,
                                embeddings=[(tmp_path / "duo.safetensors", "<duo>")])
    prompt = "a <duo> painting"
    ids = ours.tokenizer(prompt)
    expected_ids = theirs.tokenizer(theirs.maybe_convert_prompt(prompt, theirs.tokenizer)).input_ids
    assert ids[0, : len(expected_ids)].tolist() == expected_ids
    with torch.no_grad():
        assert (ours.text_encoder(ids) - theirs.text_encoder(ids).last_hidden_state).abs().max().item() <= 1e-10
