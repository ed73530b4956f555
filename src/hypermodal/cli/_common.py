"""What every command shares: the error wrapper, the help layout, shared options and parsers,
and the checks every option gets before any work starts (ranges, devices, output locations).

Only :mod:`typer`, :mod:`hypermodal.common.errors` and :mod:`hypermodal.common.files` are
imported here, so ``--help`` stays fast; each command imports its stage inside its body.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from hypermodal.common.errors import (
    CheckpointError,
    DeviceError,
    DiskFullError,
    HypermodalError,
    LockedError,
    MissingDependencyError,
    OutputError,
    ResumeError,
)
from hypermodal.common.files import check_writable, is_disk_full

F = TypeVar("F", bound=Callable[..., Any])

#: shared by the commands that can run on a local process pool or a Ray cluster
EngineOption = Annotated[
    str,
    typer.Option(
        metavar="ENGINE",
        help="local (process pool) | ray (a Ray cluster; predict: the model runs on its workers).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS",
        help="Ray cluster to join (auto, ray://host:10001); default: start one here.",
    ),
]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar.")]

#: the errors whose message is the whole story (no exception name in front of it)
MESSAGE_ONLY = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    CheckpointError,
    ResumeError,
    DeviceError,
    OutputError,
    DiskFullError,
    LockedError,
    MissingDependencyError,
)

#: the modules the light install (``pip install hypermodal``) does not have
TORCH_MODULES = frozenset({"torch", "torchvision"})
TRAIN_EXTRA = "pip install 'hypermodal[train]'"


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit (status 2) to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def friendly_errors(func: F) -> F:
    """Turn expected failures (bad paths, bad files, bad inputs) into one line and exit 2.

    Missing or clashing paths and the errors of :data:`MESSAGE_ONLY` (a bad checkpoint, nothing
    to resume, a bad device, an output that cannot be written, a held lock, a full disk, a
    missing package) print their message; a command that needs PyTorch where it is not
    installed prints ``<command> needs PyTorch: pip install 'hypermodal[train]'``; a full disk
    reported by any library prints ``disk full at <path>``; every
    other :class:`~hypermodal.common.errors.HypermodalError`, :class:`ValueError` and
    :class:`KeyError` prints ``<ExceptionType>: <message>``. Anything else is a bug and keeps
    its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MESSAGE_ONLY as exc:
            raise fail(str(exc)) from None
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in TORCH_MODULES:
                raise
            name = func.__name__.replace("_", "-")
            raise fail(f"{name} needs PyTorch: {TRAIN_EXTRA}") from None
        except (HypermodalError, ValueError, KeyError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise fail(f"disk full at {exc.filename or 'the output location'}") from None

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------ checks before work
def _option(param: Any) -> str:
    return str(param.opts[0]) if getattr(param, "opts", None) else str(param.name)


def at_least(minimum: float) -> Callable[..., Any]:
    """An option callback: a value below ``minimum`` ends the command with one error line."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and value < minimum:
            raise fail(f"{_option(param)} must be at least {minimum}, got {value}")
        return value

    return check


def above(bound: float) -> Callable[..., Any]:
    """An option callback: a value not above ``bound`` ends the command with one error line."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and not value > bound:
            raise fail(f"{_option(param)} must be greater than {bound}, got {value}")
        return value

    return check


#: the limits of each decoding worker, on the commands that decode files (catalog, store,
#: predict): see :class:`hypermodal.common.isolation.DecodeLimits`
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        callback=above(0),
        help="Time limit per file; a file past it is reported and skipped (default 120).",
    ),
]
MemoryLimitOption = Annotated[
    int | None,
    typer.Option(
        "--memory-limit",
        metavar="MB",
        callback=at_least(0),
        help="Memory ceiling of each decoding process, at least 1024 (default 4096, or half "
        "the RAM when less; 0: none).",
    ),
]


def device_option(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> Any:
    """An option callback: ``--device`` must name a device this machine has (one error line);
    ``auto`` always does, and is resolved when the model is placed."""
    if value is None or value.strip().lower() == "auto":
        return value
    from hypermodal.inference.model import resolve_device

    try:
        resolve_device(value)
    except DeviceError as exc:
        raise fail(str(exc)) from None
    return value


def output_file(path: Path, *suffixes: str, what: str = "the output") -> Path:
    """Check before any work that the file ``path`` can be written and ends in ``suffixes``.

    Raises:
        OutputError: a folder, a wrong extension, or a location that cannot be written.
        DiskFullError: no room left there.
    """
    return check_writable(path, suffixes=suffixes, what=what)


def output_folders(*paths: Path | None) -> None:
    """Check before any work that every given folder (``None``: skipped) can be written into."""
    for path in paths:
        if path is not None:
            check_writable(path, folder=True)


#: numeric options that must be at least 1 (counts) or 0 (seeds)
Positive = at_least(1)
NonNegative = at_least(0)


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
    """``--ratios 0.7,0.15,0.15`` as the train, validate and test shares (each 0 to 1)."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 <= x <= 1 for x in parts):
        raise ValueError(
            f"--ratios expects three shares train,validate,test from 0 to 1; got {text!r}"
        )
    return parts[0], parts[1], parts[2]
