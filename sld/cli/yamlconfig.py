"""Reading YAML configs and omegaconf dotlist overrides against a dataclass schema, with one-line errors."""
import re

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

DOTLIST_ITEM = re.compile(r"^[A-Za-z_][\w.]*=")


def config_error(source: str, error: OmegaConfBaseException, schema: type) -> ValueError:
    """One line naming the source, the key and, for an unknown key, the keys `schema` allows there."""
    key = getattr(error, "full_key", None)
    if isinstance(error, ConfigKeyError) and key:
        parent = key.rpartition(".")[0]
        root = OmegaConf.structured(schema)
        node = OmegaConf.select(root, parent) if parent else root
        allowed = ", ".join(f"{parent}.{k}" if parent else k for k in node) if OmegaConf.is_dict(node) else "none"
        return ValueError(f"{source}: unknown key {key!r}; allowed: {allowed}")
    return ValueError(f"{source}: {str(error).splitlines()[0]}" + (f" (key {key})" if key else ""))


def merge(config, other, source: str, schema: type):
    try:
        return OmegaConf.merge(config, other)
    except OmegaConfBaseException as error:
        raise config_error(source, error, schema) from None


def read_yaml(path: str, schema: type) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except OSError as error:
        raise ValueError(f"config file {path!r} cannot be read ({error.strerror or error}); "
                         "allowed: a readable YAML file") from None
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path!r} is not valid YAML ({' '.join(str(error).split())})") from None
    if not OmegaConf.is_dict(loaded):
        sections = ", ".join(OmegaConf.structured(schema))
        raise ValueError(f"config file {path!r} must hold a mapping of sections ({sections})")
    return loaded


def parse_dotlist(overrides: list[str], schema: type) -> DictConfig:
    for item in overrides:
        if not DOTLIST_ITEM.match(item):
            raise ValueError(f"override {item!r} is not KEY=VALUE; allowed: dotted keys such as sampler.steps=30")
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as error:
        raise config_error("overrides", error, schema) from None
