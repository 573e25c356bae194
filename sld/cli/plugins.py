"""User plug-in modules by name (`--plugin mymod`, config key `plugins`): importing one runs its
`@register_sampler` / `@register_hook` decorators, so its samplers and hooks are then usable by name.

Installed packages need no import: their entry points ("sld.samplers", "sld.hooks") are found by the registry.
"""
import importlib
import os
import sys


def import_plugins(modules: list[str]) -> None:
    """Import each module in order, the current folder first on the path (as `python -m` has it)."""
    if not modules:
        return
    folder = os.getcwd()
    if folder not in sys.path and "" not in sys.path:
        sys.path.insert(0, folder)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # the module's own code may raise anything; name the module, keep its reason
            raise ValueError(f"--plugin (plugins) {name!r} failed to import ({type(error).__name__}: {error}); "
                             "allowed: a module importable from the current folder or the Python path") from None
