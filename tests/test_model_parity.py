"""UNet, VAE and CLIP text encoder against diffusers / transformers on the same random weights.

Tolerances: float64 max abs difference <= 1e-10; float32 max abs difference <= 1e-5 relative to the output scale.
"""
import pytest
import torch

from models.loader import build
from models.sd1 import TINY_SD1

F64_TOL = 1e-10
F32_REL_TOL = 1e-5


@pytest.fixture(scope="module")
def ours(tiny_weights):
    return {dtype: build(TINY_SD1, tiny_weights, "cpu", dtype) for dtype in (torch.float64, torch.float32)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("size", [(8, 8), (8, 12)])
def test_unet_matches_diffusers(ours, reference_parts, size):
    ref_unet = reference_parts[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, *size, generator=g, dtype=torch.float64)
    context = torch.randn(2, 77, TINY_SD1.unet.context_dim, generator=g, dtype=torch.float64)
    t = torch.tensor([981, 1])
    with torch.no_grad():
        expected = ref_unet(x, t, encoder_hidden_states=context).sample
        got64 = ours[torch.float64].unet(x, t, context)
        got32 = ours[torch.float32].unet(x.float(), t, context.float())
    assert (got64 - expected).abs().max().item() <= F64_TOL
    assert rel_err(got32, expected) <= F32_REL_TOL


def test_unet_accepts_scalar_timestep(ours):
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    context = torch.randn(3, 77, TINY_SD1.unet.context_dim, dtype=torch.float64)
    unet = ours[torch.float64].unet
    with torch.no_grad():
        assert torch.equal(unet(x, 500, context), unet(x, torch.tensor([500, 500, 500]), context))


def test_vae_matches_diffusers(ours, reference_parts):
    ref_vae = reference_parts[1]
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 64, 48, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(2, 4, 8, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        expected_mean = ref_vae.encode(image).latent_dist.mean
        expected_image = ref_vae.decode(z).sample
        vae64, vae32 = ours[torch.float64].vae, ours[torch.float32].vae
        assert (vae64.encode(image) - expected_mean).abs().max().item() <= F64_TOL
        assert (vae64.decode(z) - expected_image).abs().max().item() <= F64_TOL
        assert rel_err(vae32.encode(image.float()), expected_mean) <= F32_REL_TOL
        assert rel_err(vae32.decode(z.float()), expected_image) <= F32_REL_TOL


def test_text_encoder_matches_transformers(ours, reference_parts):
    ref_text = reference_parts[2]
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, TINY_SD1.text.vocab_size, (3, 77), generator=g)
    with torch.no_grad():
        expected = ref_text(ids).last_hidden_state
        got64 = ours[torch.float64].text_encoder(ids)
        got32 = ours[torch.float32].text_encoder(ids)
    assert got64.shape == (3, 77, TINY_SD1.text.width)
    assert (got64 - expected).abs().max().item() <= F64_TOL
    assert rel_err(got32, expected) <= F32_REL_TOL


def test_unet_shares_latents_across_context_branches(ours):
    """x with B rows and context with k * B rows: each branch sees the same latents, branch-major."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    context = torch.randn(6, 77, TINY_SD1.unet.context_dim, generator=g, dtype=torch.float64)
    unet = ours[torch.float64].unet
    with torch.no_grad():
        shared = unet(x, torch.tensor([981, 981]), context)
        repeated = unet(x.repeat(3, 1, 1, 1), 981, context)
    assert (shared - repeated).abs().max().item() <= F64_TOL
    with pytest.raises(ValueError, match="multiple of the latent batch"):
        unet(x, 981, context[:5])
