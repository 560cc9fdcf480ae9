"""Model registry: ``build(name, problem, config)``; importing a family registers it."""

from . import alista, amp, classical, design_space, lfista, lista, lista_cp, na_alista, slista, tilista  # noqa: F401
from .base import MODELS, Config, UnrolledNet, build, config_fields, make_config, register

__all__ = ["MODELS", "Config", "UnrolledNet", "build", "config_fields", "make_config", "register"]
