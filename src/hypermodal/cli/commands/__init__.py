"""CLI commands that live in their own modules.

Each module here defines ``COMMANDS: dict[str, Callable]`` — Typer command functions whose
heavy imports happen inside the function body. :func:`register` adds them all to the app, so a
new command family does not need to touch ``cli.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any


def register(app: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, func in getattr(module, "COMMANDS", {}).items():
            app.command(name)(wrap(func))
