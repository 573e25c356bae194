"""The sampler and hook registry: decorators, lookups, options by signature, and entry-point plug-ins loaded lazily."""
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch

from sampling import registry
from sampling.registry import HOOKS, SAMPLERS, get_hook, get_sampler, register_hook, register_sampler
from sampling.samplers import plan_sampling, sample
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sampling.families import DISCRETE, EULER

BUILTINS = ("pndm", "ddim", "euler", "euler_a", "heun", "lms", "dpmpp_2m", "ddpm", "pndm_diffusers")
ALPHAS = alphas_cumprod(scaled_linear_betas())


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Every test starts from the built-ins and leaves no registration behind."""
    get_sampler("pndm")  # the built-ins are in
    monkeypatch.setattr(registry._SAMPLERS, "entries", dict(registry._SAMPLERS.entries))
    monkeypatch.setattr(registry._HOOKS, "entries", dict(registry._HOOKS.entries))


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """Fake installed plug-ins: a module written to disk, entry points naming objects in it."""
    module = "sld_test_plugin"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent('''
        from sampling.registry import register_sampler
        from sampling.families import EULER

        def plain(model, x, schedule):
            return x + 1

        @register_sampler("decorated", family=EULER)
        def decorated(model, x, schedule, callback=None):
            return x + 2

        class Shout:
            def __init__(self, volume=1.0):
                self.volume = volume
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    groups = {
        "sld.samplers": [EntryPoint("plain", f"{module}:plain", "sld.samplers"),
                         EntryPoint("decorated", f"{module}:decorated", "sld.samplers"),
                         EntryPoint("broken", "sld_no_such_module:fn", "sld.samplers")],
        "sld.hooks": [EntryPoint("shout", f"{module}:Shout", "sld.hooks")],
    }
    monkeypatch.setattr(registry, "entry_points", lambda group: groups.get(group, []))
    return module


def test_builtins_are_registered_in_order():
    assert tuple(SAMPLERS)[: len(BUILTINS)] == BUILTINS and "euler" in SAMPLERS and len(SAMPLERS) >= 8
    assert get_sampler("euler").family is EULER and get_sampler("ddim").family is DISCRETE
    assert get_sampler("ddim").options == {"eta", "generator", "callback"}
    assert get_sampler("euler").options == {"callback"} and get_sampler("ddpm").options == {"generator", "callback"}


def test_register_sampler_by_decorator_and_use_it():
    seen = {}

    @register_sampler("mine")
    def sample_mine(model, x, schedule, callback=None):
        seen["timesteps"] = schedule.timesteps
        for i, t in enumerate(schedule.timesteps):
            x = x - 0.1 * model(x, t)
            callback(i, t, x)
        return x

    assert "mine" in SAMPLERS and get_sampler("mine").fn is sample_mine and get_sampler("mine").options == {"callback"}
    steps = []
    x = sample("mine", lambda x, t: torch.ones_like(x), torch.zeros(1, 2), 3, None, ALPHAS,
               callback=lambda i, t, x: steps.append(i))
    assert seen["timesteps"] == [667, 334, 1] and steps == [0, 1, 2]
    assert torch.allclose(x, torch.full((1, 2), -0.3))


def test_options_follow_the_signature():
    calls = {}

    @register_sampler("takes_all")
    def takes_all(model, x, schedule, **options):
        calls.update(options)
        return x

    @register_sampler("takes_eta")
    def takes_eta(model, x, schedule, eta=0.0):
        calls["eta_only"] = eta
        return x

    generator = torch.Generator()
    sample("takes_all", None, torch.zeros(1), 2, None, ALPHAS, eta=0.5, generator=generator)
    assert calls["eta"] == 0.5 and calls["generator"] is generator and calls["callback"] is None
    sample("takes_eta", None, torch.zeros(1), 2, None, ALPHAS, eta=0.25, generator=generator)
    assert calls["eta_only"] == 0.25
    with pytest.raises(ValueError, match="eta=0.5 applies only to sampler='ddim' or 'takes_all' or 'takes_eta' "
                                         r"\(sampler='pndm' takes no eta\)"):
        plan_sampling("pndm", 2, None, ALPHAS, eta=0.5)


def test_family_decides_the_schedule():
    register_sampler("sigma_mine", family=EULER)(lambda model, x, schedule: x)
    plan = plan_sampling("sigma_mine", 4, None, ALPHAS, karras=True)
    assert plan.schedule.timesteps[0] == pytest.approx(999.0, abs=1e-9) and plan.schedule.sigmas[-1] == 0.0
    assert plan_sampling("sigma_mine", 4, None, ALPHAS).schedule.timesteps == [999.0, 666.0, 333.0, 0.0]


def test_conflicts_and_bad_registrations():
    def one(model, x, schedule):
        return x

    def other(model, x, schedule):
        return x

    register_sampler("dup")(one)
    register_sampler("dup")(one)  # the same function again: fine
    with pytest.raises(ValueError, match="sampler 'dup' is already registered .*one.*replace=True"):
        register_sampler("dup")(other)
    register_sampler("dup", replace=True)(other)
    assert get_sampler("dup").fn is other
    with pytest.raises(ValueError, match="sampler name ' x' is invalid"):
        register_sampler(" x")(one)
    with pytest.raises(ValueError, match="sampler name '' is invalid"):
        register_sampler("")(one)
    with pytest.raises(ValueError, match="family='euler' is invalid"):
        register_sampler("y", family="euler")
    with pytest.raises(ValueError, match="is not callable"):
        register_sampler("z")(42)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match="sampler='nope' is unknown; allowed: pndm, ddim, euler"):
        get_sampler("nope")
    with pytest.raises(ValueError, match="hook='nope' is unknown; allowed: "):
        get_hook("nope")


def test_register_hook_factory():
    @register_hook("gentle")
    class Gentle:
        name = "gentle"

        def __init__(self, scale: float = 1.0):
            self.scale = scale

    assert "gentle" in HOOKS and get_hook("gentle") is Gentle and get_hook("gentle")(scale=2.0).scale == 2.0
    with pytest.raises(ValueError, match="hook 'gentle' is already registered"):
        register_hook("gentle")(lambda: None)


def test_entry_points_are_listed_without_import_and_loaded_on_lookup(plugins):
    assert {"plain", "decorated", "broken"} <= set(SAMPLERS) and "shout" in HOOKS
    assert plugins not in sys.modules  # listing imported nothing
    spec = get_sampler("plain")
    assert plugins in sys.modules and spec.family is DISCRETE and spec.options == frozenset()
    decorated = get_sampler("decorated")  # registered by its module's decorator: keeps its family
    assert decorated.family is EULER and decorated.options == {"callback"}
    assert torch.equal(sample("decorated", None, torch.zeros(1), 3, None, ALPHAS), torch.full((1,), 2.0))
    assert get_hook("shout")(volume=3.0).volume == 3.0


def test_broken_plugin_names_its_entry_point(plugins):
    with pytest.raises(ImportError, match="sampler plug-in 'broken' .*sld_no_such_module:fn.*failed to load"):
        get_sampler("broken")
    assert get_sampler("plain").fn(None, torch.zeros(1), None) == 1  # the others still load
