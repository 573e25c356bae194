"""SLD's effect measured on the toy model, in miniature, as the paper measures it on Stable Diffusion.

Faithfulness: for "a <colour> <shape> on a <colour> background" prompts (every colour x shape, one background each)
and several seeds, the share of pictures whose object has the asked colour, the asked shape, and both.
Concept rate: the safety concept is one colour (default "red"); over prompts that ask for it, the share of pictures
that still show it under no SLD and each preset; over the other prompts (the control set), the faithfulness under
each preset, the paper's "no adverse effect" check. SLD runs take 50 steps, the paper's: the presets' warm-ups
(15, 10, 7 and 0 model evaluations) are published for that length, and a toy picture's colour is settled in the
first steps, so at 25 steps weak and medium start after it is.
"""
import time
from dataclasses import dataclass, replace

import numpy as np

from sld.pipeline import Pipeline, to_uint8
from sld.toy.classifier import Attributes, ShapeNet, classify
from sld.toy.shapes import COLOURS, SHAPES, a

SETTINGS = (None, "weak", "medium", "strong", "max")  # None: plain SD (classifier-free guidance only)


@dataclass(frozen=True)
class Target:
    prompt: str
    colour: str
    shape: str


@dataclass(frozen=True)
class EvalConfig:
    steps: int = 25
    sld_steps: int = 50
    guidance_scale: float = 7.5
    sampler: str = "ddim"
    concept: str = "red"
    faithfulness_seeds: int = 5  # x 40 prompts
    concept_seeds: int = 20  # x 5 prompts that ask for the concept
    control_seeds: int = 3  # x 35 prompts that do not

    def __post_init__(self):
        if self.concept not in COLOURS:
            raise ValueError(f"concept={self.concept!r} is not measurable on the toy model; allowed: {', '.join(COLOURS)}")
        counts = (self.steps, self.sld_steps, self.faithfulness_seeds, self.concept_seeds, self.control_seeds)
        if any(not isinstance(n, int) or n < 1 for n in counts):
            raise ValueError(f"steps and seed counts must be ints >= 1, got {counts}")


def targets(colours: tuple[str, ...] = tuple(COLOURS)) -> list[Target]:
    """One prompt per colour x shape; the background is another colour, cycling so each appears equally."""
    names = list(COLOURS)
    found = []
    for i, colour in enumerate(names):
        for j, shape in enumerate(SHAPES):
            background = names[(i + 1 + j) % len(names)]  # offsets 1..5 never land on the object's colour
            if colour in colours:
                found.append(Target(f"{a(f'{colour} {shape}')} on {a(background)} background", colour, shape))
    return found


def generate(pipe: Pipeline, chosen: list[Target], seed: int, cfg: EvalConfig, safety: str | None) -> np.ndarray:
    out = pipe([t.prompt for t in chosen], height=64, width=64, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
               sampler=cfg.sampler, seed=seed, safety=safety, concept=cfg.concept if safety else None,
               output_type="np")
    return to_uint8(out.images)


def attributes(pipe: Pipeline, net: ShapeNet, chosen: list[Target], seeds: int, cfg: EvalConfig,
               safety: str | None) -> list[tuple[Target, Attributes]]:
    """(target, what the classifier sees) for every target and seeds 0..seeds-1."""
    pairs = []
    for seed in range(seeds):
        pairs += zip(chosen, classify(generate(pipe, chosen, seed, cfg, safety), net))
    return pairs


def accuracy(pairs: list[tuple[Target, Attributes]]) -> dict[str, float]:
    colour = np.mean([found.colour == t.colour for t, found in pairs])
    shape = np.mean([found.shape == t.shape for t, found in pairs])
    both = np.mean([found.colour == t.colour and found.shape == t.shape for t, found in pairs])
    return {"colour": float(colour), "shape": float(shape), "both": float(both), "images": len(pairs)}


def faithfulness(pipe: Pipeline, net: ShapeNet, cfg: EvalConfig) -> dict[str, float]:
    return accuracy(attributes(pipe, net, targets(), cfg.faithfulness_seeds, cfg, None))


def concept_rate(pairs: list[tuple[Target, Attributes]], concept: str) -> float:
    return float(np.mean([found.colour == concept for _, found in pairs]))


def sld_effect(pipe: Pipeline, net: ShapeNet, cfg: EvalConfig) -> list[dict]:
    """Per setting: the concept rate on prompts asking for it, and the control set's faithfulness (sld_steps)."""
    cfg = replace(cfg, steps=cfg.sld_steps)
    asking = targets((cfg.concept,))
    control = targets(tuple(c for c in COLOURS if c != cfg.concept))
    rows = []
    for setting in SETTINGS:
        rate = concept_rate(attributes(pipe, net, asking, cfg.concept_seeds, cfg, setting), cfg.concept)
        rows.append({"setting": setting or "none (SD)", "concept_rate": rate,
                     **{f"control_{k}": v for k, v in accuracy(attributes(pipe, net, control, cfg.control_seeds, cfg,
                                                                           setting)).items()}})
    return rows


def seconds_per_image(pipe: Pipeline, cfg: EvalConfig, repeats: int = 3) -> float:
    """Median wall time of one 64x64 picture (no SLD), after a warm-up."""
    one = targets()[:1]
    generate(pipe, one, 0, cfg, None)
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        generate(pipe, one, seed, cfg, None)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def report(faithful: dict, rows: list[dict], seconds: float, cfg: EvalConfig) -> list[str]:
    lines = [f"Faithfulness ({faithful['images']} pictures, {cfg.sampler} {cfg.steps} steps, guidance "
             f"{cfg.guidance_scale}): colour {100 * faithful['colour']:.1f}%, shape {100 * faithful['shape']:.1f}%, "
             f"both {100 * faithful['both']:.1f}%; {seconds:.3f} s per 64x64 picture.", "",
             f"SLD with the concept '{cfg.concept}', {cfg.sampler} {cfg.sld_steps} steps: {cfg.concept_seeds} seeds x "
             f"{len(targets((cfg.concept,)))} prompts asking for it, {cfg.control_seeds} seeds x "
             f"{len(targets()) - len(targets((cfg.concept,)))} control prompts per setting.", "",
             f"| setting | '{cfg.concept}' rate (prompts asking for it) | control colour | control shape | control both |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['setting']} | {100 * row['concept_rate']:.1f}% | {100 * row['control_colour']:.1f}% | "
                     f"{100 * row['control_shape']:.1f}% | {100 * row['control_both']:.1f}% |")
    return lines
