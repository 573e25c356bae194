"""Samplers and guidance hooks by name: a user's module or an installed plug-in adds one without editing the package.

    from sampling.registry import register_sampler
    from sampling.schedule import alpha_bar, step_pairs

    @register_sampler("mine")                      # family DISCRETE: integer timesteps, "leading" | "compvis"
    def sample_mine(model, x, schedule, callback=None):
        for i, (t, t_prev) in enumerate(step_pairs(schedule.timesteps)):
            eps = model(x, t)                      # the guided denoiser: every hook runs inside
            ...
        return x

    pipe("a cat", sampler="mine")

A sampler is `fn(model, x, schedule, **options) -> x_0`: `model(x_vp, t) -> eps`, x the unit-variance x_T,
`schedule` a sampling.schedule.Schedule placed by the sampler's family (DISCRETE, EULER or DPM_SOLVER; see
sampling/families.py). Of the options eta, generator (the run's seeded generator) and callback(i, t, x), a sampler
receives those its signature names; eta != 0 is refused for a sampler without `eta`.
A hook factory is any callable that returns a GuidanceHook, a hook class for instance: `@register_hook("mine")`.

Installed plug-ins declare entry points in the groups "sld.samplers" and "sld.hooks": the entry point's name is
the registered name, its object the sampler function or hook factory (a sampler decorated with that same name in
its module keeps the family it declares; an undecorated one gets DISCRETE). Listing names imports no plug-in;
looking a name up imports that one only.
"""
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch

from sampling.builtins import BUILTINS
from sampling.families import DISCRETE, ScheduleFamily

SAMPLER_GROUP = "sld.samplers"
HOOK_GROUP = "sld.hooks"
SAMPLER_OPTIONS = ("eta", "generator", "callback")

SamplerFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: SamplerFn
    family: ScheduleFamily
    options: frozenset[str]  # which of SAMPLER_OPTIONS fn takes


class Registry:
    """Names -> entries of one kind; that kind's entry points are listed by name and imported on first lookup."""

    def __init__(self, kind: str, group: str, register: Callable[[str], Callable]):
        self.kind, self.group = kind, group
        self.entries: dict[str, object] = {}
        self._register = register  # the public decorator, used for an entry point its module did not register

    def add(self, name: str, entry: object, replace: bool) -> None:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"{self.kind} name {name!r} is invalid; allowed: a non-empty string without outer spaces")
        held = self.entries.get(name)
        if held is not None and _target(held) is not _target(entry) and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(_target(held))}); "
                             "pass replace=True to override it")
        self.entries[name] = entry

    def names(self) -> tuple[str, ...]:
        plugins = [ep.name for ep in entry_points(group=self.group) if ep.name not in self.entries]
        return (*self.entries, *dict.fromkeys(plugins))

    def get(self, name: str) -> object:
        if name not in self.entries:
            for ep in entry_points(group=self.group):
                if ep.name == name:
                    loaded = _load(ep, self.kind)
                    if name not in self.entries:  # importing the plug-in may have registered it already
                        self._register(name)(loaded)
                    break
        if name not in self.entries:
            raise ValueError(f"{self.kind}={name!r} is unknown; allowed: {', '.join(self.names())}")
        return self.entries[name]


class Names(Sequence[str]):
    """The names registered at the time of use (built-ins, runtime registrations, installed plug-ins): usable
    wherever a tuple of choices is, argparse's `choices` for instance."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, index: int | slice):
        return self._registry.names()[index]

    def __len__(self) -> int:
        return len(self._registry.names())

    def __contains__(self, name: object) -> bool:
        return name in self._registry.names()

    def __repr__(self) -> str:
        return repr(self._registry.names())


def register_sampler(name: str, *, family: ScheduleFamily = DISCRETE, replace: bool = False
                     ) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: register `fn(model, x, schedule, **options)` as sampler `name`; returns fn unchanged."""
    if not isinstance(family, ScheduleFamily):
        raise ValueError(f"family={family!r} is invalid; allowed: a sampling.families.ScheduleFamily "
                         "(DISCRETE, EULER, DPM_SOLVER)")

    def register(fn: SamplerFn) -> SamplerFn:
        if not callable(fn):
            raise ValueError(f"sampler {name!r}: {fn!r} is not callable")
        _SAMPLERS.add(name, SamplerSpec(name, fn, family, _options(fn)), replace)
        return fn

    return register


def register_hook(name: str, *, replace: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register a hook factory (a GuidanceHook class, or a function returning one) as `name`."""

    def register(factory: Callable) -> Callable:
        if not callable(factory):
            raise ValueError(f"hook {name!r}: {factory!r} is not callable")
        _HOOKS.add(name, factory, replace)
        return factory

    return register


def get_sampler(name: str) -> SamplerSpec:
    return _SAMPLERS.get(name)


def registered_samplers() -> tuple[SamplerSpec, ...]:
    """The samplers registered so far: built-ins, runtime registrations, plug-ins already looked up (none imported)."""
    return tuple(_SAMPLERS.entries.values())


def get_hook(name: str) -> Callable:
    """The factory registered as `name`; call it with the hook's arguments."""
    return _HOOKS.get(name)


def _options(fn: SamplerFn) -> frozenset[str]:
    parameters = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return frozenset(SAMPLER_OPTIONS)
    return frozenset(p.name for p in parameters if p.name in SAMPLER_OPTIONS)


def _target(entry: object) -> object:
    return entry.fn if isinstance(entry, SamplerSpec) else entry


def _describe(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _load(ep, kind: str) -> object:
    try:
        obj = ep.load()
    except Exception as error:
        raise ImportError(f"{kind} plug-in {ep.name!r} (entry point {ep.value!r}, group {ep.group!r}) failed to "
                          f"load: {error}") from error
    if not callable(obj):
        raise ValueError(f"{kind} plug-in {ep.name!r} (entry point {ep.value!r}) is {obj!r}, not callable")
    return obj


_SAMPLERS = Registry("sampler", SAMPLER_GROUP, register_sampler)
_HOOKS = Registry("hook", HOOK_GROUP, register_hook)
for _name, _fn, _family in BUILTINS:
    register_sampler(_name, family=_family)(_fn)
SAMPLERS = Names(_SAMPLERS)  # live: tuple(SAMPLERS) is a snapshot
HOOKS = Names(_HOOKS)
