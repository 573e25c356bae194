"""The one resolver of safety settings: a name, a preset, an sld.SLD / sld.SEGA or "negative" becomes one `Safety`
(its hooks, its negative prompt, its label and its record), used alike by the pipeline, the CLI, sweeps and I2P.
A new baseline is added here and nowhere else. Hook names and hook objects become checked guidance hooks here too.
"""
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from sampling.guidance import GuidanceHook
from sampling.registry import get_hook
from sld.hooks.safety import DEFAULT_CONCEPT, PRESET_VALUES, SLD, SLD_VALUES, preset
from sld.hooks.sega import SEGA, SEGA_SAFETY_VALUES, sega_safety

NONE = "none"
NEGATIVE = "negative"
SEGA_PREFIX = "sega-"
SAFETY_NAMES = (*PRESET_VALUES, NEGATIVE, *(f"{SEGA_PREFIX}{level}" for level in SEGA_SAFETY_VALUES))
SETTING_NAMES = (NONE, *SAFETY_NAMES)  # what --preset, compare cells and I2P settings accept
CUSTOM = "custom"  # the label of an sld.SLD / sld.SEGA built by the caller


@dataclass(frozen=True)
class Safety:
    """A resolved safety setting. `hook` is a template: `hooks()` hands out a fresh copy per generation, since a hook
    keeps state (momentum) while it runs."""

    label: str  # the setting it started from: "none", an SLD preset, "negative", "sega-<level>" or "custom"
    hook: SLD | SEGA | None = None
    negative_prompt: str | None = None  # the negative-prompt baseline: the concept replaces the unconditional prompt

    def hooks(self) -> list[GuidanceHook]:
        return [] if self.hook is None else [dataclasses.replace(self.hook)]

    def record(self) -> dict | None:
        """The exact setting for image records (None without one); "method" tells them apart: "sld" (its five
        values), "sega" (every edit concept and the momentum) or "negative"; "preset" is the label."""
        if self.negative_prompt is not None:
            return {"method": "negative", "preset": self.label, "concept": self.negative_prompt}
        if isinstance(self.hook, SEGA):
            return {"method": "sega", "preset": self.label, "edits": [dataclasses.asdict(e) for e in self.hook.edits],
                    "momentum_scale": self.hook.momentum_scale, "momentum_beta": self.hook.momentum_beta,
                    "space": self.hook.space}
        if isinstance(self.hook, SLD):
            return {"method": "sld", "preset": self.label, **{key: getattr(self.hook, key) for key in SLD_VALUES},
                    "concept": self.hook.concept, "space": self.hook.space}
        return None

    def record_fields(self) -> dict:
        """The record fields the setting decides: `safety`, and for the negative baseline the negative prompt used."""
        fields = {"safety": self.record()}
        if self.negative_prompt is not None:
            fields["negative_prompt"] = self.negative_prompt
        return fields


NO_SAFETY = Safety(NONE)


def _allowed() -> str:
    return f"None, {', '.join(SAFETY_NAMES)}, an sld.SLD or an sld.SEGA"


def check_concept(concept) -> None:
    if concept is not None and (not isinstance(concept, str) or not concept.strip()):
        raise ValueError(f"concept={concept!r} is invalid; allowed: None (the paper's concept) or a non-empty string")


def setting_safety(setting: str, concept: str | None) -> Safety:
    """An evaluation run's setting by name with the run's concept (None: the paper's); "none" takes no concept."""
    return resolve_safety(setting, None if setting == NONE else concept)


def resolve_safety(safety, concept: str | None = None, label: str | None = None) -> Safety:
    """None or "none" -> no safety; an SLD preset, "sega-<level>" or "negative" (the concept as negative prompt, the
    baseline papers compare SLD with) with `concept` or the paper's; an sld.SLD (with `concept` if given) or an
    sld.SEGA, labelled `label` (default "custom"); a Safety as it is."""
    check_concept(concept)
    if isinstance(safety, Safety) and concept is None:
        return safety
    if safety is None or safety == NONE:
        if concept is not None:
            raise ValueError("concept was given but safety=None; choose a preset or an sld.SLD to use the concept")
        return NO_SAFETY
    if isinstance(safety, str) and safety not in SAFETY_NAMES:
        raise ValueError(f"safety={safety!r} is unknown; allowed: {_allowed()}")
    text = concept or DEFAULT_CONCEPT
    if safety == NEGATIVE:
        return Safety(NEGATIVE, negative_prompt=text)
    if isinstance(safety, str) and safety.startswith(SEGA_PREFIX):
        return Safety(safety, sega_safety(safety.removeprefix(SEGA_PREFIX), text))
    if isinstance(safety, str):
        return Safety(safety, dataclasses.replace(preset(safety), concept=text))
    if isinstance(safety, SLD):
        return Safety(label or CUSTOM, dataclasses.replace(safety, concept=concept or safety.concept))
    if isinstance(safety, SEGA):
        if concept is not None:
            raise ValueError("concept applies to SLD presets; an sld.SEGA carries its own edit concepts")
        return Safety(label or CUSTOM, dataclasses.replace(safety))
    raise ValueError(f"safety={safety!r} is invalid; allowed: {_allowed()}")


def guidance_hooks(entries: Sequence) -> list[GuidanceHook]:
    """Hook objects, and registered hook names built with no arguments, checked to be guidance hooks."""
    hooks = [get_hook(entry)() if isinstance(entry, str) else entry for entry in entries]
    for hook in hooks:
        if not isinstance(hook, GuidanceHook):
            raise ValueError(f"hooks entry {hook!r} is not a guidance hook; allowed: objects with name, concepts(), "
                             "reset() and __call__(direction, inputs), or registered hook names")
    return hooks
