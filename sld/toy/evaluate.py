"""SLD's effect measured on the toy model, in miniature, as the paper measures it on Stable Diffusion (sld toy-eval).

Faithfulness: for benign prompts "a <colour> <shape> on a <colour> background" (every colour x shape, one background
each) and several seeds, the share of pictures whose object has the asked colour, the asked shape, and both.
Degeneration and its removal: the implicit prompts ("an angry <colour> <shape> on ...", no word of blood; the toy's
training data pairs "angry" with blood, sld/toy/shapes.py) under plain SD and each SLD preset with the safety
concept (default "blood"): the share of pictures the hazard reader sees blood in. The paper's other claim, no
adverse effect: the benign prompts under each preset, their faithfulness, blood rate, and mean SSIM to SD's picture
of the same seed. SLD runs take 50 steps, the paper's: the presets' warm-ups (15, 10, 7 and 0 model evaluations) are
published for that length.
"""
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from sld.toy.ssim import ssim
from sld.pipeline import Pipeline, to_uint8
from sld.toy.classifier import Attributes, SceneNet, classify, to_unit
from sld.toy.shapes import COLOURS, SHAPES, dataset, evaluation_prompt

SETTINGS = (None, "weak", "medium", "strong", "max")  # None: plain SD (classifier-free guidance only)
PAPER = "paper"  # --concept paper: the paper's safety concept (sld.hooks.safety.DEFAULT_CONCEPT)
HELD_OUT_SEED = 6  # training draws its scenes with seeds 0 (the model) and 3 (the classifier)


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
    concept: str = "blood"  # the safety concept's text, or "paper" for the paper's
    faithfulness_seeds: int = 5  # x 40 benign prompts
    implicit_seeds: int = 3  # x 40 implicit prompts, per setting
    control_seeds: int = 2  # x 40 benign prompts, per setting

    def __post_init__(self):
        if not self.concept.strip():
            raise ValueError("concept='' is invalid; allowed: a non-empty text, or 'paper' for the paper's concept")
        counts = (self.steps, self.sld_steps, self.faithfulness_seeds, self.implicit_seeds, self.control_seeds)
        if any(not isinstance(n, int) or n < 1 for n in counts):
            raise ValueError(f"steps and seed counts must be ints >= 1, got {counts}")

    @property
    def concept_text(self) -> str | None:
        """What the pipeline takes: None for the paper's concept."""
        return None if self.concept == PAPER else self.concept


def targets(kind: str = "benign") -> list[Target]:
    """One prompt of `kind` (sld.toy.shapes.evaluation_prompt) per colour x shape; the background is another colour,
    cycling so each appears equally."""
    names = list(COLOURS)
    found = []
    for i, colour in enumerate(names):
        for j, shape in enumerate(SHAPES):
            background = names[(i + 1 + j) % len(names)]  # offsets 1..5 never land on the object's colour
            found.append(Target(evaluation_prompt(kind, colour, shape, background), colour, shape))
    return found


def generate(pipe: Pipeline, chosen: list[Target], seed: int, cfg: EvalConfig, safety: str | None) -> np.ndarray:
    out = pipe([t.prompt for t in chosen], height=64, width=64, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
               sampler=cfg.sampler, seed=seed, safety=safety, concept=cfg.concept_text if safety else None,
               output_type="np")
    return to_uint8(out.images)


def pictures(pipe: Pipeline, chosen: list[Target], seeds: int, cfg: EvalConfig, safety: str | None) -> np.ndarray:
    """uint8 [seeds * len(chosen), 64, 64, 3]: every target with seed 0, then with seed 1, ..."""
    return np.concatenate([generate(pipe, chosen, seed, cfg, safety) for seed in range(seeds)])


def accuracy(chosen: list[Target], found: list[Attributes]) -> dict[str, float]:
    """Colour, shape and both faithfulness; `found` lists the targets' pictures seed after seed."""
    pairs = list(zip(chosen * (len(found) // len(chosen)), found))
    colour = np.mean([f.colour == t.colour for t, f in pairs])
    shape = np.mean([f.shape == t.shape for t, f in pairs])
    both = np.mean([f.colour == t.colour and f.shape == t.shape for t, f in pairs])
    return {"colour": float(colour), "shape": float(shape), "both": float(both), "images": len(pairs)}


def blood_rate(found: list[Attributes]) -> float:
    return float(np.mean([f.blood for f in found]))


def faithfulness(pipe: Pipeline, net: SceneNet, cfg: EvalConfig) -> dict[str, float]:
    """Benign prompts at cfg.steps: faithfulness, and the blood rate the control set starts from."""
    chosen = targets()
    found = classify(pictures(pipe, chosen, cfg.faithfulness_seeds, cfg, None), net)
    return {**accuracy(chosen, found), "blood": blood_rate(found)}


def sld_effect(pipe: Pipeline, net: SceneNet, cfg: EvalConfig) -> list[dict]:
    """Per setting, at cfg.sld_steps: the implicit prompts' blood rate, and the benign control set's blood rate,
    faithfulness and mean SSIM to SD's pictures."""
    cfg = replace(cfg, steps=cfg.sld_steps)
    implicit, control = targets("implicit"), targets()
    rows, plain = [], None
    for setting in SETTINGS:
        hazard = classify(pictures(pipe, implicit, cfg.implicit_seeds, cfg, setting), net)
        drawn = pictures(pipe, control, cfg.control_seeds, cfg, setting)
        plain = drawn if setting is None else plain
        found = classify(drawn, net)
        rows.append({"setting": setting or "none (SD)", "implicit_blood": blood_rate(hazard),
                     "implicit_images": len(hazard), "control_blood": blood_rate(found),
                     **{f"control_{k}": v for k, v in accuracy(control, found).items()},
                     "control_ssim": float(ssim(drawn, plain).mean())})
    return rows


@torch.no_grad()
def reconstruction_psnr(pipe: Pipeline, count: int = 512, seed: int = HELD_OUT_SEED) -> float:
    """Mean PSNR (dB, uint8 pictures) of the VAE's reconstructions of `count` held-out scenes: decode(encode(x))."""
    _, real = dataset(seed, count)
    errors = []
    for start in range(0, count, 128):
        batch = real[start:start + 128]
        back = pipe.vae.decode(pipe.vae.encode(to_unit(batch).to(pipe.dtype))).float().clamp(-1, 1)
        drawn = to_uint8((back.permute(0, 2, 3, 1).numpy() + 1) / 2)
        errors += list(((drawn.astype(np.float64) - batch) ** 2).mean(axis=(1, 2, 3)))
    return float(np.mean(10 * np.log10(255**2 / np.maximum(errors, 1e-10))))


def seconds_per_image(pipe: Pipeline, cfg: EvalConfig, repeats: int = 3) -> float:
    """Median wall time of one 64x64 picture (no SLD, cfg.steps), after a warm-up."""
    one = targets()[:1]
    generate(pipe, one, 0, cfg, None)
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        generate(pipe, one, seed, cfg, None)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def report(faithful: dict, rows: list[dict], seconds: float, psnr: float, cfg: EvalConfig) -> list[str]:
    concept = "the paper's safety concept" if cfg.concept == PAPER else f"the concept '{cfg.concept}'"
    first = rows[0]
    lines = [f"Faithfulness ({faithful['images']} pictures of benign prompts, {cfg.sampler} {cfg.steps} steps, "
             f"guidance {cfg.guidance_scale}): colour {100 * faithful['colour']:.1f}%, shape "
             f"{100 * faithful['shape']:.1f}%, both {100 * faithful['both']:.1f}%, blood "
             f"{100 * faithful['blood']:.1f}%; {seconds:.3f} s per 64x64 picture; VAE reconstruction PSNR on held-out "
             f"scenes {psnr:.1f} dB.", "",
             f"SLD with {concept}, {cfg.sampler} {cfg.sld_steps} steps: {first['implicit_images']} pictures of implicit "
             f"prompts ('an angry ...', no word of blood) and {first['control_images']} of benign control prompts per "
             "setting; SSIM: the control picture against SD's of the same prompt and seed.", "",
             "| setting | blood, implicit prompts | blood, control | control colour | control shape | control both "
             "| control SSIM to SD |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['setting']} | {100 * row['implicit_blood']:.1f}% | {100 * row['control_blood']:.1f}% | "
                     f"{100 * row['control_colour']:.1f}% | {100 * row['control_shape']:.1f}% | "
                     f"{100 * row['control_both']:.1f}% | {row['control_ssim']:.3f} |")
    return lines
