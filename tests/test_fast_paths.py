"""The speed paths of the networks change no result: the UNet's shared prefix across guidance branches, the VAE's
channels-last layout and in-place SiLU and residual sums, the CPU's heap-sized slices (convolutions over output
channels, the feed-forward over tokens), the fused upsampling convolution, and the half-precision policy (float32
compute for half weights on CPUs without native half arithmetic).

Tolerances: float64 max abs difference <= 1e-10 (exact paths); bfloat16 max abs difference <= 5e-2 relative to the
output scale (bfloat16 keeps 8 bits of mantissa, ~4e-3 relative per rounding).
"""
import pytest
import torch
import torch.nn.functional as F

import models.layers
import models.upsample
from models.layers import Conv2d
from models.loader import build
from models.sd1 import TINY_SD1
from models.unet import GEGLU
from models.upsample import Upsample

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


@pytest.fixture
def slice_everything(monkeypatch):
    """Heap limit of 4 KiB and no pixel minimum: every convolution of the tiny models runs in output-channel slices,
    every feed-forward in token blocks, every upsampling fused; records the sizes the parts really ran at."""
    monkeypatch.setattr(models.layers, "HEAP_LIMIT", 4096)
    monkeypatch.setattr(models.upsample, "MIN_PIXELS", 0)
    seen = {"conv_out_channels": [], "geglu_rows": []}
    conv_forward, geglu_forward = Conv2d._conv_forward, GEGLU.forward

    def conv_spy(self, x, weight, bias):
        seen["conv_out_channels"].append((weight.shape[0], self.out_channels))
        return conv_forward(self, x, weight, bias)

    def geglu_spy(self, x):
        seen["geglu_rows"].append(x.shape[:-1].numel())
        return geglu_forward(self, x)

    monkeypatch.setattr(Conv2d, "_conv_forward", conv_spy)
    monkeypatch.setattr(GEGLU, "forward", geglu_spy)
    return seen


def test_heap_slices_and_fused_upsampling_match_diffusers(models64, reference_parts, slice_everything):
    x, context = unet_inputs(batch=1, branches=3)
    z, _ = vae_inputs()
    with torch.no_grad():
        unet_out = models64.unet(x, 981, context)
        decoded = models64.vae.decode(z)
        expected_unet = reference_parts[0](x.repeat(3, 1, 1, 1), 981, encoder_hidden_states=context).sample
        expected_decoded = reference_parts[1].decode(z).sample
    assert any(sliced < full for sliced, full in slice_everything["conv_out_channels"])
    assert max(slice_everything["geglu_rows"]) < 3 * 8 * 8  # no block saw all tokens of the 8x8 latents
    assert (unet_out - expected_unet).abs().max().item() <= F64_TOL
    assert (decoded - expected_decoded).abs().max().item() <= F64_TOL


def plain_upsample(up: Upsample, x: torch.Tensor, size=None) -> torch.Tensor:
    return up.conv(F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest"))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_upsampling_equals_upsampling_then_convolution(layout, monkeypatch):
    """Odd sizes, both layouts, heap slices or not: equal to nearest 2x then the 3x3 convolution, in the input's
    layout; an output size other than twice the input (the UNet's odd latents) takes the plain path."""
    torch.manual_seed(0)
    up = Upsample(8).double()
    x = torch.randn(2, 8, 9, 15, dtype=torch.float64).contiguous(memory_format=layout)
    assert up.can_fuse(x)
    expected = plain_upsample(up, x)
    fused = up(x)
    monkeypatch.setattr(models.layers, "HEAP_LIMIT", 1024)  # 4 slices of 2 output channels
    sliced = up(x)
    assert fused.is_contiguous(memory_format=layout) and fused.shape == (2, 8, 18, 30)
    assert (fused - expected).abs().max().item() <= F64_TOL
    assert (sliced - expected).abs().max().item() <= F64_TOL
    assert (up(x, torch.Size((17, 29))) - plain_upsample(up, x, (17, 29))).abs().max().item() <= F64_TOL


def test_fused_upsampling_gradients_and_hooks():
    """Gradients (input and weights) equal the plain path's; a hook on the convolution sees the upsampled input."""
    torch.manual_seed(1)
    up = Upsample(4).double()
    x = torch.randn(1, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    grads = []
    for forward in (up, lambda t: plain_upsample(up, t)):
        up.zero_grad()
        x.grad = None
        forward(x).square().sum().backward()
        grads.append([x.grad.clone(), up.conv.weight.grad.clone(), up.conv.bias.grad.clone()])
    for fused, plain in zip(*grads):
        assert (fused - plain).abs().max().item() <= F64_TOL * max(1.0, plain.abs().max().item())
    inputs = []
    handle = up.conv.register_forward_hook(lambda module, args, out: inputs.append(args[0].shape))
    try:
        with torch.no_grad():
            hooked = up(x)
    finally:
        handle.remove()
    assert inputs == [torch.Size((1, 4, 32, 32))]
    with torch.no_grad():
        assert (hooked - up(x)).abs().max().item() <= F64_TOL


def test_feed_forward_blocks_are_invisible_to_hooks(models64, monkeypatch):
    """A hook inside the feed-forward keeps seeing every token at once."""
    monkeypatch.setattr(models.layers, "HEAP_LIMIT", 4096)
    ff = models64.unet.input_blocks[1][1].transformer_blocks[0].ff
    x = torch.randn(3, 64, ff.net[2].out_features, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rows = []
    with torch.no_grad():
        blocked = ff(x)
        handle = ff.net[0].register_forward_hook(lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
        try:
            whole = ff(x)
        finally:
            handle.remove()
    assert rows == [3 * 64]
    assert (blocked - whole).abs().max().item() <= F64_TOL
