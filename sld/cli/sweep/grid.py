"""The grid of `sld sweep`: a base run configuration plus a `sweep:` mapping from dotted keys to lists of values.

    sampler: {steps: 30}
    sweep:
      sld.preset: [none, medium, sega-max, negative]
      sampler.name: [ddim, pndm]
      hooks.args.myhook.scale: [0.5, 1.0]        # keyword arguments of a --hook / hooks.names factory
      model.loras: [[], [style.safetensors:0.5], [style.safetensors:1.0]]   # a LoRA's scale (each value: a list)

Nested mappings are read as dotted keys (`sweep: {sld: {threshold: [...]}}` is `sld.threshold`), so dotlist
overrides reach the grid too: `sweep.sld.threshold=[0.0,0.01]`. The points are the cartesian product in the
mapping's order, the last key varying fastest; point r is run id r. A swept key's value replaces the base's.
"""
import copy
import dataclasses
import itertools
import json
import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from sld.cli.config import RunConfig, SamplerSection, SLDSection, merge_run_config, run_config_of, set_key
from sld.cli.sweep.tables import flatten_dotted
from sld.cli.yamlconfig import parse_dotlist, read_yaml

SWEEP = "sweep"
NOT_SWEPT = ("sampler.seed",)  # seeds are the columns of each contact sheet
HOOK_ARGUMENT = re.compile(r"^hooks\.args\.[^.]+\.[^.]+$")
HOOK_ARGUMENT_FORM = "hooks.args.<hook>.<keyword>"


def _fields(section: str, schema) -> list[str]:
    return [f"{section}.{item.name}" for item in dataclasses.fields(schema)]


SWEEPABLE = tuple(key for key in _fields("sampler", SamplerSection) + _fields("sld", SLDSection)
                  + ["hooks.names", "prompt.negative", "model.loras", "model.embeddings"] if key not in NOT_SWEPT)
ALLOWED = ", ".join([*SWEEPABLE, HOOK_ARGUMENT_FORM])
FORMAT = f"sweep: a mapping from dotted keys to non-empty lists of values; keys: {ALLOWED}"


@dataclass(frozen=True)
class Point:
    run_id: int
    values: dict[str, object]  # swept key -> this point's value
    run: RunConfig

    @property
    def label(self) -> str:
        return "\n".join(f"{key}={value_text(value)}" for key, value in self.values.items())


def value_text(value) -> str:
    """A swept value as a label or CSV cell shows it: strings as they are, anything else as JSON (null, 0.01)."""
    return value if isinstance(value, str) else json.dumps(value)


def check_grid(grid: dict[str, object]) -> dict[str, list]:
    """Known keys with non-empty lists of values; ValueError naming the key and listing the allowed ones."""
    if not grid:
        raise ValueError(f"the config has no sweep: mapping or it is empty; allowed: {FORMAT}")
    for key, values in grid.items():
        if key not in SWEEPABLE and not HOOK_ARGUMENT.match(key):
            raise ValueError(f"sweep key {key!r} is unknown; allowed: {ALLOWED}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep key {key!r} has {values!r}; allowed: a non-empty list of values, e.g. [a, b]")
    return grid


def read_sweep(config_files: list[str], overrides: list[str], flags: dict[str, object]
               ) -> tuple[DictConfig, dict[str, list]]:
    """The merged base configuration (files, overrides, flags) and the checked grid (files, then sweep.* overrides)."""
    files, grids = [], [OmegaConf.create()]
    for path in config_files:
        loaded = read_yaml(path, RunConfig)
        grid = loaded.pop(SWEEP, {})
        if not isinstance(grid, (dict, DictConfig)):
            raise ValueError(f"config file {path!r}: sweep is {grid!r}; allowed: {FORMAT}")
        files.append((path, loaded))
        grids.append(grid)
    grid_overrides = [item for item in overrides if item.startswith(f"{SWEEP}.")]
    base = merge_run_config(files, [item for item in overrides if item not in grid_overrides], flags)
    merged = OmegaConf.merge(*grids, parse_dotlist(grid_overrides, RunConfig).get(SWEEP, {}))
    return base, check_grid(flatten_dotted(OmegaConf.to_container(merged, resolve=True)))


def grid_points(base: DictConfig, grid: dict[str, list]) -> list[Point]:
    """Every combination of the grid's values applied to the base, each checked (plug-ins imported first)."""
    points = []
    for run_id, combination in enumerate(itertools.product(*grid.values())):
        values = dict(zip(grid, combination))
        config = copy.deepcopy(base)
        description = ", ".join(f"{key}={value_text(value)}" for key, value in values.items())
        for key, value in values.items():
            set_key(config, key, value, f"sweep run {run_id} ({description})")
        try:
            points.append(Point(run_id, values, run_config_of(config)))
        except ValueError as error:
            raise ValueError(f"sweep run {run_id} ({description}): {error}") from None
    return points
