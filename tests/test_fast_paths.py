"""The speed paths of the networks change no result: the UNet's shared prefix across guidance branches, the VAE's
channels-last layout and in-place SiLU and residual sums, and the half-precision policy (float32 compute for half
weights on CPUs without native half arithmetic).

Tolerances: float64 max abs difference <= 1e-10 (exact paths); bfloat16 max abs difference <= 5e-2 relative to the
output scale (bfloat16 keeps 8 bits of mantissa, ~4e-3 relative per rounding).
"""
import pytest
import torch

import models.layers
from models.loader import build
from models.sd1 import TINY_SD1

F64_TOL = 1e-10
BF16_REL_TOL = 5e-2


@pytest.fixture(scope="module")
def models64(tiny_weights):
    return build(TINY_SD1, tiny_weights, "cpu", torch.float64)


def unet_inputs(batch: int, branches: int, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, 4, 8, 8, generator=g, dtype=dtype)
    context = torch.randn(branches * batch, 77, TINY_SD1.unet.context_dim, generator=g, dtype=dtype)
    return x, context


def rows_seen_by_first_conv(unet, x, t, context) -> int:
    seen = []
    handle = unet.input_blocks[0][0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            unet(x, t, context)
    finally:
        handle.remove()
    return seen[0]


def test_shared_prefix_matches_repeated_latents_and_diffusers(models64, reference_parts):
    unet = models64.unet
    x, context = unet_inputs(batch=2, branches=3)
    t = torch.tensor([981, 500])
    with torch.no_grad():
        shared = unet(x, t, context)
        repeated = unet(x.repeat(3, 1, 1, 1), t.repeat(3), context)
        expected = reference_parts[0](x.repeat(3, 1, 1, 1), t.repeat(3), encoder_hidden_states=context).sample
    assert rows_seen_by_first_conv(unet, x, t, context) == 2  # the prefix really runs once per latent
    assert (shared - repeated).abs().max().item() <= F64_TOL
    assert (shared - expected).abs().max().item() <= F64_TOL


def test_branches_at_different_timesteps_share_nothing(models64):
    unet = models64.unet
    x, context = unet_inputs(batch=1, branches=3)
    t = torch.tensor([981, 500, 1])
    with torch.no_grad():
        mixed = unet(x, t, context)
        one_by_one = torch.cat([unet(x, t[i : i + 1], context[i : i + 1]) for i in range(3)])
    assert rows_seen_by_first_conv(unet, x, t, context) == 3
    assert (mixed - one_by_one).abs().max().item() <= F64_TOL


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("native", [True, False], ids=["bf16-compute", "float32-compute"])
def test_bfloat16_policy_keeps_dtype_and_accuracy(tiny_weights, monkeypatch, native):
    """Both policies (native bfloat16 arithmetic, float32 arithmetic on bfloat16 weights) return bfloat16 and stay
    within bfloat16 accuracy of the float64 model built from the same bfloat16-rounded weights."""
    monkeypatch.setattr(models.layers, "cpu_multiplies_natively", lambda dtype: native)
    rounded = {k: v.bfloat16() for k, v in tiny_weights.items()}
    half, exact = build(TINY_SD1, rounded, "cpu", torch.bfloat16), build(TINY_SD1, rounded, "cpu", torch.float64)
    assert models.layers.compute_dtype(half.unet.out[2].weight) == (torch.bfloat16 if native else torch.float32)
    x, context = unet_inputs(batch=1, branches=3)
    ids = torch.randint(0, TINY_SD1.text.vocab_size, (2, 77), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        pairs = [
            (half.unet(x.bfloat16(), 981, context.bfloat16()), exact.unet(x, 981, context)),
            (half.vae.decode(x.bfloat16()), exact.vae.decode(x)),
            (half.text_encoder(ids), exact.text_encoder(ids)),
        ]
    for got, expected in pairs:
        assert got.dtype == torch.bfloat16
        assert rel_err(got, expected) <= BF16_REL_TOL


def vae_inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    return torch.randn(2, 4, 8, 8, generator=g, dtype=dtype), torch.rand(2, 3, 64, 64, generator=g, dtype=dtype) * 2 - 1


def test_vae_fast_paths_match_diffusers_and_return_plain_layout(models64, reference_parts):
    """Channels-last and in-place buffers inside; contiguous NCHW out, equal to diffusers in float64."""
    z, image = vae_inputs()
    with torch.no_grad():
        decoded, encoded = models64.vae.decode(z), models64.vae.encode(image)
        expected_decoded = reference_parts[1].decode(z).sample
        expected_encoded = reference_parts[1].encode(image).latent_dist.mean
    assert decoded.is_contiguous() and encoded.is_contiguous()
    assert (decoded - expected_decoded).abs().max().item() <= F64_TOL
    assert (encoded - expected_encoded).abs().max().item() <= F64_TOL


def test_vae_in_place_buffers_are_invisible_to_hooks(models64):
    """A forward hook keeps the output it was handed (SiLU would overwrite a GroupNorm output without the hook) and
    the result is bit-identical either way."""
    vae, (z, _) = models64.vae, vae_inputs()
    norm, kept = vae.decoder.mid.block_1.norm1, []
    with torch.inference_mode():
        plain = vae.decode(z)
        handle = norm.register_forward_hook(lambda module, args, out: kept.append((args[0], out)))
        try:
            hooked = vae.decode(z)
        finally:
            handle.remove()
        recomputed = norm(kept[0][0])
    assert torch.equal(kept[0][1], recomputed)
    assert kept[0][1].min().item() < -0.3  # below SiLU's minimum (-0.278): really the norm's output
    assert torch.equal(plain, hooked)


def test_vae_trains_through_the_fast_paths(models64):
    """With autograd recording, gradients through the fast paths equal a float64 central difference."""
    vae, (z, _) = models64.vae, vae_inputs()
    z = z[:1].clone().requires_grad_(True)
    direction = torch.randn_like(z)
    vae.decode(z).square().mean().backward()
    eps = 1e-6
    with torch.no_grad():
        numeric = ((vae.decode(z + eps * direction).square().mean() - vae.decode(z - eps * direction).square().mean())
                   / (2 * eps))
    assert abs((z.grad * direction).sum().item() - numeric.item()) <= 1e-6 * max(1.0, abs(numeric.item()))
