"""What `sld generate`, `sld compare` and `sld sweep` share: a loaded model with everything a run's images have in
common (size, spacing, the record), the progress bar, and one image per pipeline call."""
from dataclasses import dataclass

from PIL import Image
from tqdm import tqdm

from sld.api import load_pipeline
from sld.cli.config import RunConfig, describe_image_key, hook_chain, micro_conditioning_of
from sld.hooks.resolve import Safety
from sld.io.model_id import model_id_of
from sld.io.records import generation_record
from sld.options import micro_conditioning_values
from sld.pipeline import Output, Pipeline
from sld.settings import SamplerSection, for_family, sampling_plan, spacing_of


@dataclass(frozen=True)
class Session:
    """A loaded model and what every image of one run shares."""

    run: RunConfig
    pipe: Pipeline
    sampler: SamplerSection  # run.sampler with the model family's defaults filled in
    height: int
    width: int
    spacing: str
    steps_per_image: int  # sampler callbacks, one per timestep
    record: dict  # sld.io.records.generation_record
    micro_conditioning: dict  # SDXL's (sld/options.py), given to every call; empty for other families


def start_session(run: RunConfig, pipe: Pipeline | None = None) -> Session:
    """Load run.model, or use `pipe` when given (a sweep loads its model once for every grid point)."""
    pipe = load_pipeline(run.model) if pipe is None else pipe
    cfg = pipe.model.cfg
    sampler = for_family(run.sampler, cfg.family)
    plan = sampling_plan(sampler)
    native = pipe.native_size
    height, width = run.image.height or native, run.image.width or native
    spacing = spacing_of(sampler, plan)
    hooks = [{"name": name, "args": run.hooks.args.get(name, {})} for name in run.hooks.names]
    micro = micro_conditioning_values(micro_conditioning_of(run.image), height, width, cfg.family,
                                      supported=cfg.unet.adm_in_channels > 0, describe=describe_image_key) or {}
    record = generation_record(model=run.model, model_id=model_id_of(run.model), family=cfg.family,
                               prediction=cfg.prediction, sampler=sampler, spacing=spacing,
                               timesteps=plan.schedule.timesteps, height=height, width=width,
                               negative_prompt=run.prompt.negative, hooks=hooks, micro_conditioning=micro or None)
    return Session(run, pipe, sampler, height, width, spacing, len(plan.schedule.timesteps), record, micro)


def progress(total: int, description: str) -> tqdm:
    """One bar over every sampler step of the run, on stderr."""
    return tqdm(total=total, desc=description, unit="step", dynamic_ncols=True)


def generate_output(session: Session, prompt: str, seed: int, safety: Safety, bar: tqdm) -> Output:
    """One image with the run's settings, fresh hooks (hooks.names) after the safety hook, and its telemetry."""
    run, sampler = session.run, session.sampler
    return session.pipe(prompt, negative_prompt=run.prompt.negative, height=session.height, width=session.width,
                        steps=sampler.steps, guidance_scale=sampler.cfg, sampler=sampler.name,
                        spacing=session.spacing, eta=sampler.eta, karras=sampler.karras, seed=seed,
                        safety=safety, hooks=hook_chain(run.hooks), callback=lambda i, t, x: bar.update(),
                        **session.micro_conditioning)


def generate_image(session: Session, prompt: str, seed: int, safety: Safety, bar: tqdm) -> Image.Image:
    return generate_output(session, prompt, seed, safety, bar).images[0]
