"""Model registry: ``build(name, problem, config)``.

Every module in this package, and in the folders listed in ``$UNROLLED_MODELS_PATH``
(separated like ``PATH``), is imported by :func:`discover`, and a family registers itself
with ``@register`` when imported: adding a model is adding one file.
"""

import importlib
import os
import pkgutil

from .base import MODELS, Config, Product, UnrolledNet, build, config_fields, make_config, register


def discover() -> dict[str, type[UnrolledNet]]:
    """Import every model module of the package's path (once each) and return the registry."""
    for folder in filter(None, os.environ.get("UNROLLED_MODELS_PATH", "").split(os.pathsep)):
        if folder not in __path__:
            __path__.append(folder)
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return MODELS


discover()

__all__ = ["MODELS", "Config", "Product", "UnrolledNet", "build", "config_fields", "discover", "make_config",
           "register"]
