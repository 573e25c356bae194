"""Pipeline behaviour on the tiny model: reproducibility, branch batching, telemetry, outputs and input validation."""
import numpy as np
import pytest
import torch
from PIL import Image

import sld

FAST = dict(height=64, width=64, steps=4)


@pytest.fixture(scope="module")
def pipe():
    return sld.load("tiny")


class CallCounter:
    """Wraps a module's forward to record the batch sizes of every call."""

    def __init__(self, module, monkeypatch):
        self.batches = []
        forward = module.forward

        def counted(*args, **kwargs):
            self.batches.append([a.shape[0] for a in args if isinstance(a, torch.Tensor)])
            return forward(*args, **kwargs)

        monkeypatch.setattr(module, "forward", counted)


def test_same_seed_same_bits(pipe):
    a = pipe("a photo of a cat", seed=7, output_type="np", **FAST)
    b = pipe("a photo of a cat", seed=7, output_type="np", **FAST)
    c = pipe("a photo of a cat", seed=8, output_type="np", **FAST)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.images, b.images)
    assert a.seed == 7 and not torch.equal(a.latents, c.latents)


def test_sld_batch_is_three_branches_one_call_per_evaluation(pipe, monkeypatch):
    unet, text = CallCounter(pipe.unet, monkeypatch), CallCounter(pipe.text_encoder, monkeypatch)
    out = pipe(["a cat", "a dog"], num_images_per_prompt=2, sampler="pndm", seed=0, output_type="latent", **FAST)
    assert len(unet.batches) == FAST["steps"] + 1 == len(out.telemetry)
    assert all(batches == [4, 12] for batches in unet.batches)  # latents [B], context [3 B]: uncond, cond, concept
    assert text.batches == [[4]]  # "", "a cat", "a dog", the concept: one encoder call per generation


def test_without_sld_two_branches(pipe, monkeypatch):
    unet = CallCounter(pipe.unet, monkeypatch)
    out = pipe("a cat", safety=None, sampler="ddim", seed=0, output_type="latent", **FAST)
    assert all(batches == [1, 2] for batches in unet.batches) and len(unet.batches) == FAST["steps"]
    assert out.telemetry[0].keys() == {"index", "t"}


def test_telemetry_records_every_evaluation(pipe):
    out = pipe("a cat", safety="strong", sampler="pndm", seed=0, output_type="latent", height=64, width=64, steps=10)
    assert [r["index"] for r in out.telemetry] == list(range(11))
    applied = [r["sld"]["applied"] for r in out.telemetry]
    assert applied == [i >= 7 for i in range(11)]  # strong: warm-up of 7 model evaluations
    record = out.telemetry[0]["sld"]
    assert set(record) == {"active_fraction", "mean_abs_gamma", "momentum_norm", "applied"}
    assert 0 <= record["active_fraction"] <= 1


def test_concept_and_custom_sld(pipe, monkeypatch):
    texts = []
    tokenize = pipe.tokenizer.__call__
    monkeypatch.setattr(type(pipe.tokenizer), "__call__", lambda self, t: texts.append(list(t)) or tokenize(t))
    pipe("a cat", concept="red", seed=0, output_type="latent", **FAST)
    pipe("a cat", safety=sld.SLD(threshold=0.5, concept="blue"), seed=0, output_type="latent", **FAST)
    assert texts == [["", "a cat", "red"], ["", "a cat", "blue"]]


def test_model_space_equals_eps_space_on_epsilon_models(pipe):
    eps = pipe("a cat", safety=sld.SLD(space="eps"), seed=2, output_type="latent", **FAST)
    model = pipe("a cat", safety=sld.SLD(space="model"), seed=2, output_type="latent", **FAST)
    assert torch.equal(eps.latents, model.latents)


def test_output_types(pipe):
    images = pipe("a cat", seed=0, height=64, width=96, steps=2).images
    assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].size == (96, 64)
    array = pipe(["a", "b"], seed=0, num_images_per_prompt=2, output_type="np", height=64, width=96, steps=2).images
    assert array.shape == (4, 64, 96, 3) and array.min() >= 0 and array.max() <= 1
    latent = pipe("a cat", seed=0, output_type="latent", height=64, width=96, steps=2)
    assert latent.images.shape == (1, 4, 8, 12) and torch.equal(latent.images, latent.latents)


def test_explicit_latents_are_used(pipe):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    a = pipe("a cat", latents=latents, output_type="latent", **FAST)
    b = pipe("a cat", latents=latents, seed=123, output_type="latent", **FAST)
    assert torch.equal(a.latents, b.latents)  # deterministic samplers: the seed does not matter with given latents


def test_ddim_eta_noise_comes_from_the_seed(pipe):
    a = pipe("a cat", sampler="ddim", eta=1.0, seed=4, output_type="latent", **FAST)
    b = pipe("a cat", sampler="ddim", eta=1.0, seed=4, output_type="latent", **FAST)
    c = pipe("a cat", sampler="ddim", eta=0.0, seed=4, output_type="latent", **FAST)
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, c.latents)


BAD = [
    (dict(height=60), "height=60 is invalid; allowed: a positive multiple of 8"),
    (dict(width=0), "width=0 is invalid"),
    (dict(steps=0), "steps=0 is invalid; allowed: an integer >= 1"),
    (dict(guidance_scale=-1.0), "guidance_scale=-1.0 is invalid; allowed: a number >= 0"),
    (dict(sampler="foo"), "sampler='foo' is unknown; allowed: pndm, ddim, euler"),
    (dict(spacing="trailing"), "spacing='trailing' is not supported by sampler='pndm'; allowed: leading, compvis"),
    (dict(safety="extreme"), "safety='extreme' is unknown; allowed: None, weak, medium, strong, max"),
    (dict(negative_prompt=["a", "b", "c"]), "negative_prompt has 3 entries but prompt has 2"),
    (dict(latents=torch.zeros(1, 4, 8, 8)), r"latents have shape \(1, 4, 8, 8\); expected \(2, 4, 8, 8\)"),
    (dict(eta=0.5), "eta=0.5 applies only to sampler='ddim'"),
    (dict(output_type="tensor"), "output_type='tensor' is unknown; allowed: pil, np, latent"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt=0 is invalid"),
    (dict(prompt=[]), "prompt must be a string or a non-empty list of strings"),
    (dict(concept=""), "concept='' is invalid"),
    (dict(hooks=[object()]), "hooks entry <object object at .*> is not a guidance hook"),
    (dict(hooks=["nonexistent"]), "nonexistent"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m.split("=")[0].split(" ")[0] for _, m in BAD])
def test_bad_input_is_refused_before_model_work(pipe, monkeypatch, kwargs, message):
    unet, text = CallCounter(pipe.unet, monkeypatch), CallCounter(pipe.text_encoder, monkeypatch)
    arguments = dict(prompt=["a", "b"], **FAST) | kwargs
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)
    assert unet.batches == [] and text.batches == []


def test_prediction_override_on_the_tiny_model():
    assert sld.load("tiny", prediction="v").model.cfg.prediction == "v"
    with pytest.raises(ValueError, match="prediction='x0' is not allowed; use None"):
        sld.load("tiny", prediction="x0")


def test_default_size_is_the_models_native_side():
    assert sld.load("tiny")("a cat", steps=1, safety=None).images[0].size == (64, 64)  # the built-ins draw 64 px
    assert sld.load("toy").native_size == 64
