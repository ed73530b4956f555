"""What every command shares: the error wrapper, the help layout, shared options and parsers.

Only :mod:`typer` and :mod:`hypermodal.common.errors` are imported here, so ``--help`` stays fast;
each command imports its stage inside its body.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from hypermodal.common.errors import CheckpointError, HypermodalError, ResumeError

F = TypeVar("F", bound=Callable[..., Any])

#: shared by the commands that can run on a local process pool or a Ray cluster
EngineOption = Annotated[
    str,
    typer.Option(metavar="ENGINE", help="local (process pool) | ray (Ray Data on a Ray cluster)."),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS",
        help="Ray cluster to join (auto, ray://host:10001); default: start one here.",
    ),
]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar.")]


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit (status 2) to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def friendly_errors(func: F) -> F:
    """Turn expected failures (bad paths, bad files, bad inputs) into one line and exit 2.

    Missing or clashing paths, :class:`~hypermodal.common.errors.CheckpointError` and
    :class:`~hypermodal.common.errors.ResumeError` print their message; every other
    :class:`~hypermodal.common.errors.HypermodalError`, :class:`ValueError` and :class:`KeyError`
    prints ``<ExceptionType>: <message>``. Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (
            FileNotFoundError,
            FileExistsError,
            NotADirectoryError,
            CheckpointError,
            ResumeError,
        ) as exc:
            raise fail(str(exc)) from None
        except (HypermodalError, ValueError, KeyError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def _no_type(ctx: Any) -> None:
    return None


class _ValueNamesOnly:
    """Help that names a value by its metavar (FILE, DIR, N) alone.

    Typer's help adds a ``<type>`` column (``<path>``, ``<bool>``, ``<list[Path]>``); for an
    argument its name already says what it takes and a flag takes no value, so both show none.
    Options that take a value set their own ``metavar``.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if isinstance(param, TyperArgument) or getattr(param, "is_flag", False):
                # an instance attribute: only this command's help changes, never its parsing
                param.display_type_rich = _no_type
        super().format_help(ctx, formatter)  # type: ignore[misc]


class HelpCommand(_ValueNamesOnly, TyperCommand):
    """Every ``hypermodal`` command (see :class:`_ValueNamesOnly`)."""


class HelpGroup(_ValueNamesOnly, TyperGroup):
    """The ``hypermodal`` command group (see :class:`_ValueNamesOnly`)."""


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (anything JSON lacks as its ``str``)."""
    typer.echo(json.dumps(data, indent=2, default=str))


def exit_if_failed(failed: int, message: str) -> None:
    """Say on stderr, in red, that ``failed`` items failed, and exit 1; nothing when none did."""
    if failed:
        typer.secho(message, err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1)


def parse_caps(caps: list[str] | None, no_caps: bool) -> dict[str, int] | None:
    """``--cap CT=50000 --cap MR=100000`` as ``{"CT": 50000, ...}``; ``{}`` for ``--no-caps``.

    Returns ``None`` when neither is given (the split's default caps apply).
    """
    if no_caps:
        return {}
    if not caps:
        return None
    out: dict[str, int] = {}
    for item in caps:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--cap expects CLASS=N (for example CT=50000), got {item!r}")
        out[name.strip().upper()] = int(value)
    return out


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``--ratios 0.7,0.15,0.15`` as the train, validate and test shares."""
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"--ratios expects three numbers train,validate,test; got {text!r}")
    return parts[0], parts[1], parts[2]
