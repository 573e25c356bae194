"""Schedule, DDIM and PNDM samplers against diffusers' DDIMScheduler / PNDMScheduler, in float64."""

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from sampling.ddim import sample_ddim
from sampling.families import discrete_at
from sampling.pndm import sample_pndm
from sampling.samplers import plan_sampling
from sampling.schedule import SPACINGS, alphas_cumprod, scaled_linear_betas, timesteps

from fakes import SHAPE, FakeEps

TOL = 1e-10
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
# CompVis make_ddim_timesteps("uniform") + 1, written out by hand: stride 1000 // 30 = 33 gives 31 entries.
COMPVIS_30 = [991, 958, 925, 892, 859, 826, 793, 760, 727, 694, 661, 628, 595, 562, 529, 496,
              463, 430, 397, 364, 331, 298, 265, 232, 199, 166, 133, 100, 67, 34, 1]
COMPVIS_50 = [981, 961, 941, 921, 901, 881, 861, 841, 821, 801, 781, 761, 741, 721, 701, 681, 661,
              641, 621, 601, 581, 561, 541, 521, 501, 481, 461, 441, 421, 401, 381, 361, 341, 321,
              301, 281, 261, 241, 221, 201, 181, 161, 141, 121, 101, 81, 61, 41, 21, 1]


@pytest.fixture(scope="module")
def ours() -> torch.Tensor:
    return alphas_cumprod(scaled_linear_betas())


def start_noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def with_our_alphas(sched, ours: torch.Tensor):
    """Put our float64 alphas into diffusers so that only the algorithm is compared, in float64."""
    sched.alphas_cumprod = ours
    sched.final_alpha_cumprod = ours[0]
    return sched


def diffusers_ddim(ours: torch.Tensor, steps: int) -> DDIMScheduler:
    sched = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          timestep_spacing="leading")
    sched.set_timesteps(steps)
    return with_our_alphas(sched, ours)


def run_diffusers_ddim(ours, steps, ts, eta, seed):
    model, x = FakeEps(), start_noise()
    sched, g = diffusers_ddim(ours, steps), torch.Generator().manual_seed(seed)
    for t in ts:
        x = sched.step(model(x, t), t, x, eta=eta, generator=g).prev_sample
    return x, model


def run_diffusers_pndm(ours, steps):
    model, x = FakeEps(), start_noise()
    sched = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
                          timestep_spacing="leading")
    sched.set_timesteps(steps)
    with_our_alphas(sched, ours)
    for t in sched.timesteps.tolist():
        x = sched.step(model(x, t), t, x).prev_sample
    return x, model


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_alphas_cumprod_match_diffusers_float32(ours):
    # diffusers builds betas and their cumprod in float32, we in float64: agreement to float32 rounding.
    theirs = DDIMScheduler(**SD_BETAS).alphas_cumprod.to(torch.float64)
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    rel = ((theirs - ours).abs() / ours).max().item()
    assert rel < 1e-6, f"max relative diff {rel} >= 1e-6"


@pytest.mark.parametrize("steps", [1, 7, 30, 50, 999])
def test_leading_timesteps_match_diffusers(steps, ours):
    assert timesteps(steps, "leading") == diffusers_ddim(ours, steps).timesteps.tolist()


@pytest.mark.parametrize("steps", [30, 50])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_matches_diffusers(steps, eta, ours):
    ts = timesteps(steps)
    model = FakeEps()
    got = sample_ddim(model, start_noise(), discrete_at(ts, ours), eta=eta, generator=torch.Generator().manual_seed(5))
    want, ref_model = run_diffusers_ddim(ours, steps, ts, eta, seed=5)
    assert len(model.calls) == steps
    assert model.seen_timesteps == ref_model.seen_timesteps
    for (x_got, _), (x_want, _) in zip(model.calls, ref_model.calls):
        assert max_abs(x_got, x_want) <= TOL, "model inputs differ by more than 1e-10"
    assert max_abs(got, want) <= TOL, f"final sample differs by {max_abs(got, want)} > 1e-10"


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 30, 50])
def test_pndm_matches_diffusers(steps, ours):
    model = FakeEps()
    got = sample_pndm(model, start_noise(), discrete_at(timesteps(steps), ours))
    want, ref_model = run_diffusers_pndm(ours, steps)
    # diffusers evaluates S + 1 times for S >= 2; S = 1 has no second timestep to average with: once.
    assert len(model.calls) == len(ref_model.calls) == (steps + 1 if steps > 1 else 1)
    assert model.seen_timesteps == ref_model.seen_timesteps
    for (x_got, _), (x_want, _) in zip(model.calls, ref_model.calls):
        assert max_abs(x_got, x_want) <= TOL, "model inputs differ by more than 1e-10"
    assert max_abs(got, want) <= TOL, f"final sample differs by {max_abs(got, want)} > 1e-10"


def test_pndm_model_space_is_eps_space_on_epsilon_models_only(ours):
    """space="model" combines raw outputs: the same numbers for an epsilon model, others for a v model."""
    class FakeV(FakeEps):
        prediction = "v"

    for model_type, same in ((FakeEps, True), (FakeV, False)):
        runs = [sample_pndm(model_type(), start_noise(), discrete_at(timesteps(10), ours), space=space) for space in ("eps", "model")]
        assert torch.equal(*runs) is same


def test_pndm_evaluation_sequence_s3(ours):
    model = FakeEps()
    sample_pndm(model, start_noise(), discrete_at(timesteps(3), ours))
    # t0, provisional t1, t1 again from the redone first step, then t2
    assert model.seen_timesteps == [667, 334, 334, 1]


def test_compvis_spacing_lists():
    assert timesteps(30, "compvis") == COMPVIS_30
    assert timesteps(50, "compvis") == COMPVIS_50


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_compvis_spacing_runs_on_its_timesteps(eta, ours):
    # diffusers' prev = t - 1000 // 30 = t - 33 is the next CompVis entry, so it is a reference here too.
    model = FakeEps()
    generator = torch.Generator().manual_seed(2)
    got = sample_ddim(model, start_noise(), discrete_at(COMPVIS_30, ours), eta=eta, generator=generator)
    want, _ = run_diffusers_ddim(ours, 30, COMPVIS_30, eta, seed=2)
    assert model.seen_timesteps == COMPVIS_30
    assert max_abs(got, want) <= TOL, f"final sample differs by {max_abs(got, want)} > 1e-10"


def test_pndm_compvis_spacing_runs_on_its_timesteps(ours):
    model = FakeEps()
    x = sample_pndm(model, start_noise(), discrete_at(COMPVIS_30, ours))
    assert model.seen_timesteps == [991, 958, *COMPVIS_30[1:]]
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("sampler", [sample_ddim, sample_pndm])
def test_callback_and_float32(sampler, ours):
    seen = []
    record = lambda i, t, x: seen.append((i, t, x))  # noqa: E731
    x = sampler(FakeEps(), start_noise().float(), discrete_at(timesteps(4), ours), callback=record)
    assert [(i, t) for i, t, _ in seen] == [(0, 751), (1, 501), (2, 251), (3, 1)]
    assert seen[-1][2] is x and x.dtype == torch.float32


@pytest.mark.parametrize("steps", [0, 1001, -3, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        timesteps(steps)


@pytest.mark.parametrize(("steps", "spacing", "nearest"), [(1000, "leading", "999"), (501, "compvis", "500"),
                                                         (3, "compvis", "2 and 4"), (333, "compvis", "250 and 334")])
def test_steps_reaching_timestep_1000(steps, spacing, nearest):
    """CompVis' own make_ddim_timesteps places timestep 1000 for these counts and then indexes past its schedule."""
    with pytest.raises(ValueError, match=f"reaches timestep 1000.*nearest allowed step counts for this spacing: {nearest}$"):
        timesteps(steps, spacing)


def test_bad_spacing():
    with pytest.raises(ValueError, match="'foo'.*" + ".*".join(SPACINGS)):
        timesteps(30, "foo")


def test_negative_eta(ours):
    with pytest.raises(ValueError, match=r"eta=-0\.1.*eta >= 0"):
        plan_sampling("ddim", 3, None, ours, eta=-0.1)
