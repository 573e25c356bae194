"""Euler, Euler ancestral, Heun, LMS, DPM-Solver++(2M) and DDPM against their diffusers schedulers, step by step.

Schedules: ours are float64; diffusers rounds sigmas and fractional timesteps to float32. The schedule tests
compare the two from the same (diffusers' float32) alphas-bar within that rounding. The sampler tests then
INJECT our float64 sigmas and timesteps into the diffusers scheduler (and our float64 alphas-bar into DDPM), so
only the algorithms are compared, in float64, to 1e-10: every model input, every timestep and the result.
Euler, Euler ancestral and DPM-Solver upcast the sample to float32 inside `step` (a guard for float16 models);
`float64_step` turns that upcast into float64 for the comparison.
"""
import math

import numpy as np
import pytest
import torch
from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler)

from sampling.euler import sample_euler
from sampling.lms import lms_coefficient, sample_lms
from sampling.samplers import plan_sampling, sample
from sampling.schedule import (alphas_cumprod, karras_sigmas, scaled_linear_betas, sigma_at, sigma_table,
                               sigma_to_t, timesteps)
from sampling.families import DISCRETE, DPM_SOLVER, EULER

from fakes import SHAPE, FakeEps
from reference import Float64Torch

TOL = 1e-10
STEPS = 30  # 1000 % 30 != 0
# Stable Diffusion 1.5's scheduler_config.json (a PNDMScheduler); the others are made with from_config of it
SD15_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                   set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None, clip_sample=False)
# diffusers rounds its sigma table (computed in float32 from float32 alphas-bar) to float32: at most 2 ulps
SIGMA_RTOL = 2.5e-7
# float32 ulp at t = 999 is 6.1e-5; Karras t also comes from float32 log-sigmas in diffusers
T_ATOL = 1e-4

REFERENCES = {  # sampler -> (diffusers scheduler, its schedule family, takes the generator)
    "euler": (EulerDiscreteScheduler, EULER, False),
    "euler_a": (EulerAncestralDiscreteScheduler, EULER, True),
    "heun": (HeunDiscreteScheduler, EULER, False),
    "lms": (LMSDiscreteScheduler, EULER, False),
    "dpmpp_2m": (DPMSolverMultistepScheduler, DPM_SOLVER, False),
    "ddpm": (DDPMScheduler, DISCRETE, True),
}
UPCASTING = ("euler", "euler_a", "dpmpp_2m")


@pytest.fixture
def float64_step(monkeypatch):
    import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a
    import diffusers.schedulers.scheduling_euler_discrete as euler

    for module in (euler, euler_a, dpm):
        monkeypatch.setattr(module, "torch", Float64Torch())


@pytest.fixture(scope="module")
def ours() -> torch.Tensor:
    return alphas_cumprod(scaled_linear_betas())


def start_noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def reference_scheduler(cls, spacing: str, karras: bool):
    extra = dict(use_karras_sigmas=True) if karras else {}
    return cls.from_config(PNDMScheduler.from_config(SD15_CONFIG).config, timestep_spacing=spacing, **extra)


def inject(name: str, sched, schedule) -> None:
    """Replace diffusers' float32 schedule by our float64 one, in the layout each scheduler keeps."""
    sigmas = torch.tensor(schedule.sigmas, dtype=torch.float64)
    ts = torch.tensor(schedule.timesteps, dtype=torch.float64)
    if name == "ddpm":
        sched.alphas_cumprod = schedule.alphas_cumprod
        return
    if name == "heun":  # predictor and corrector: every inner sigma and timestep twice
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        ts = torch.cat([ts[:1], ts[1:].repeat_interleave(2)])
    if name == "dpmpp_2m":
        ts = ts.long()
    sched.sigmas, sched.timesteps = sigmas, ts


def run_reference(name, ours, spacing, karras, seed=3):
    cls, family, takes_generator = REFERENCES[name]
    sched = reference_scheduler(cls, spacing, karras)
    sched.set_timesteps(STEPS)
    schedule = (family.build_karras if karras else family.build)(STEPS, spacing, ours)
    inject(name, sched, schedule)
    if name == "ddpm":
        assert sched.timesteps.tolist() == schedule.timesteps
    model, generator = FakeEps(), torch.Generator().manual_seed(seed)
    x = start_noise() * sched.init_noise_sigma
    for t in sched.timesteps:
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **(dict(generator=generator) if takes_generator else {})).prev_sample
    return x, model


def run_ours(name, ours, spacing, karras, seed=3):
    model = FakeEps()
    x = sample(name, model, start_noise(), STEPS, spacing, ours, generator=torch.Generator().manual_seed(seed),
               karras=karras)
    return x, model


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_same_run(got, want, model, ref_model):
    assert [t for _, t in model.calls] == [t for _, t in ref_model.calls]
    for (x_got, _), (x_want, _) in zip(model.calls, ref_model.calls):
        assert max_abs(x_got, x_want) <= TOL, "model inputs differ by more than 1e-10"
    assert max_abs(got, want) <= TOL, f"final sample differs by {max_abs(got, want)} > 1e-10"


CASES = [
    ("euler", "linspace", False), ("euler", "leading", False), ("euler", "linspace", True),
    ("euler_a", "linspace", False), ("euler_a", "leading", False),
    ("heun", "linspace", False), ("heun", "leading", False), ("heun", "linspace", True),
    ("lms", "linspace", False), ("lms", "leading", False), ("lms", "linspace", True),
    ("dpmpp_2m", "linspace", False), ("dpmpp_2m", "leading", False), ("dpmpp_2m", "linspace", True),
    ("ddpm", "leading", False),
]


@pytest.mark.parametrize(("name", "spacing", "karras"), CASES)
def test_matches_diffusers_step_by_step(name, spacing, karras, ours, float64_step):
    got, model = run_ours(name, ours, spacing, karras)
    want, ref_model = run_reference(name, ours, spacing, karras)
    evaluations = 2 * STEPS - 1 if name == "heun" else STEPS
    assert len(model.calls) == len(ref_model.calls) == evaluations
    assert_same_run(got, want, model, ref_model)


def test_ddpm_compvis_spacing_matches_diffusers_custom_timesteps(ours):
    # diffusers DDPM with custom timesteps steps to the next listed one, as ours does on any list
    sched = DDPMScheduler.from_config(PNDMScheduler.from_config(SD15_CONFIG).config)
    compvis = timesteps(STEPS, "compvis")
    sched.set_timesteps(timesteps=compvis)
    sched.alphas_cumprod = ours
    model, generator, x = FakeEps(), torch.Generator().manual_seed(3), start_noise()
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x, generator=generator).prev_sample
    got_model = FakeEps()
    got = sample("ddpm", got_model, start_noise(), STEPS, "compvis", ours, generator=torch.Generator().manual_seed(3))
    assert len(got_model.calls) == len(compvis) == 31
    assert_same_run(got, x, got_model, model)


@pytest.mark.parametrize("name", ["euler_a", "ddpm"])
def test_ancestral_samplers_use_the_seed(name, ours):
    a, _ = run_ours(name, ours, None, False, seed=1)
    b, _ = run_ours(name, ours, None, False, seed=1)
    c, _ = run_ours(name, ours, None, False, seed=2)
    assert torch.equal(a, b) and max_abs(a, c) > 1e-3


@pytest.mark.parametrize(("name", "spacing", "karras"), [
    ("euler", "linspace", False), ("euler", "leading", False), ("euler", "linspace", True),
    ("euler", "leading", True), ("dpmpp_2m", "linspace", False), ("dpmpp_2m", "leading", False),
    ("dpmpp_2m", "linspace", True), ("dpmpp_2m", "leading", True), ("ddpm", "leading", False),
])
def test_schedule_matches_diffusers_float32(name, spacing, karras):
    cls, family, _ = REFERENCES[name]
    sched = reference_scheduler(cls, spacing, karras)
    sched.set_timesteps(STEPS)
    theirs_alphas = sched.alphas_cumprod.double()  # same alphas-bar: only the placement is compared
    schedule = (family.build_karras if karras else family.build)(STEPS, spacing, theirs_alphas)
    got_t = torch.tensor(schedule.timesteps, dtype=torch.float64)
    if name == "euler":
        assert (got_t - sched.timesteps.double()).abs().max().item() <= T_ATOL
        init = float(sched.init_noise_sigma)
        assert abs(schedule.init_sigma - init) <= SIGMA_RTOL * init
    else:
        assert schedule.timesteps == sched.timesteps.tolist() and all(isinstance(t, int) for t in schedule.timesteps)
    if name != "ddpm":
        want = sched.sigmas.double()
        got = torch.tensor(schedule.sigmas, dtype=torch.float64)
        assert ((got - want).abs() <= SIGMA_RTOL * want).all()


def test_dpm_solver_starts_from_unit_variance_vp_latents(ours):
    schedule = DPM_SOLVER.build(STEPS, "linspace", ours)
    assert schedule.init_sigma == pytest.approx(math.sqrt(schedule.sigmas[0] ** 2 + 1), rel=1e-15)


def test_sigma_helpers_reproduce_numpy_and_diffusers_in_float64(ours):
    table = sigma_table(ours)
    points = [0.0, 0.25, 1.0, 17.5, 964.5517241379312, 998.999, 999.0]
    want = np.interp(points, np.arange(1000), table.numpy())
    assert [sigma_at(table, t) for t in points] == want.tolist()
    sched = EulerDiscreteScheduler.from_config(SD15_CONFIG)
    log_table = np.log(table.numpy())
    for sigma in [0.01, 0.0291671581517, 0.5, 3.3, 14.6146412293, 20.0]:
        assert abs(sigma_to_t(table, sigma) - float(sched._sigma_to_t(np.array(sigma), log_table))) <= 1e-12
    assert karras_sigmas(0.03, 14.6, 1) == [pytest.approx(14.6, rel=1e-14)]
    assert karras_sigmas(0.03, 14.6, 5)[-1] == pytest.approx(0.03, rel=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_lms_coefficients_are_the_exact_integrals(order, ours):
    from scipy import integrate  # test-only reference: diffusers integrates with scipy's quad

    sigmas = EULER.build(12, "linspace", ours).sigmas
    i = 9
    for j in range(order):
        def basis(s, j=j):
            return math.prod((s - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]) for k in range(order) if k != j)

        want = integrate.quad(basis, sigmas[i], sigmas[i + 1], epsabs=0, epsrel=1e-13)[0]
        assert abs(lms_coefficient(sigmas, i, order, j) - want) <= 1e-12 * max(1.0, abs(want))
    # the basis polynomials sum to 1: the coefficients sum to the step length
    total = sum(lms_coefficient(sigmas, i, order, j) for j in range(order))
    assert total == pytest.approx(sigmas[i + 1] - sigmas[i], rel=1e-13)


def test_lms_of_order_one_is_euler(ours):
    schedule = EULER.build(10, "linspace", ours)
    got = sample_lms(FakeEps(), start_noise(), schedule, order=1)
    want = sample_euler(FakeEps(), start_noise(), schedule)
    assert max_abs(got, want) <= 1e-12


def test_callbacks_once_per_step_and_float32(ours):
    for name in ("euler", "euler_a", "heun", "lms", "dpmpp_2m", "ddpm"):
        seen = []
        x = sample(name, FakeEps(), start_noise().float(), 4, None, ours, generator=torch.Generator(),
                   callback=lambda i, t, x, seen=seen: seen.append((i, t, x)))
        assert [i for i, _, _ in seen] == [0, 1, 2, 3], name
        assert seen[-1][2] is x and x.dtype == torch.float32 and torch.isfinite(x).all(), name


def test_single_step_lands_on_x0(ours):
    for name in ("euler", "euler_a", "heun", "lms", "dpmpp_2m"):
        model = FakeEps()
        plan = plan_sampling(name, 1, None, ours)
        x = plan.run(model, start_noise(), torch.Generator())
        sigma, t = plan.schedule.sigmas[0], plan.schedule.timesteps[0]
        x_sigma = start_noise() * plan.schedule.init_sigma
        assert len(model.calls) == 1
        assert max_abs(x, x_sigma - sigma * FakeEps()(x_sigma / (sigma**2 + 1) ** 0.5, t)) <= 1e-12, name


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(name="euler", spacing="compvis"), ("spacing='compvis' is not supported by sampler='euler'; allowed: "
                                             r"linspace, leading \(or None: linspace\)")),
    (dict(name="ddim", spacing="linspace"), "spacing='linspace' is not supported by sampler='ddim'"),
    (dict(name="ddpm", karras=True), ("karras=True is not supported by sampler='ddpm'; allowed with: euler, "
                                      "euler_a, heun, lms, dpmpp_2m")),
    (dict(name="euler", eta=0.3), "eta=0.3 applies only to sampler='ddim'"),
    (dict(name="euler", karras=1), "karras=1 is invalid"),
    (dict(name="nope"), "sampler='nope' is unknown; allowed: pndm, ddim, euler, euler_a, heun, lms, dpmpp_2m, ddpm"),
    (dict(name="euler", steps=0), "steps=0 is invalid"),
    (dict(name="dpmpp_2m", steps=999, spacing="leading"), r"steps=999 is invalid for DPM-Solver .* 1\.\.998"),
    (dict(name="euler", steps=1000, spacing="leading"), r"nearest allowed step counts for this spacing: 999"),
])
def test_bad_arguments(kwargs, message, ours):
    arguments = dict(name="euler", steps=10, spacing=None, alphas_cumprod=ours) | kwargs
    with pytest.raises(ValueError, match=message):
        plan_sampling(**arguments)
