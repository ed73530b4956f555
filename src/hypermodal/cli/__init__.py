"""The ``hypermodal`` command line: the app and every command it has, registered below.

The commands live by pipeline stage in :mod:`~hypermodal.cli.gather` (samples, plan, fetch,
build), :mod:`~hypermodal.cli.data` (catalog, split, store, shard, synth, info) and
:mod:`~hypermodal.cli.model` (train, evaluate, predict, demo), :mod:`~hypermodal.cli.sort`
(sort) and :mod:`~hypermodal.cli.export` (export). Each imports its stage inside its
body, so ``hypermodal --help`` starts fast. Every command runs inside
:func:`~hypermodal.cli._common.friendly_errors`: a
:class:`~hypermodal.common.errors.HypermodalError` (or a missing path, a bad value, a full disk)
prints one ``error: …`` line on stderr and exits with status 2. Before any work, every numeric
option is range-checked, ``--device`` is checked against the machine and every output location
is checked for writability (and its extension against what is written), each failure one
``error:`` line. ``--verbose`` logs at debug level and lets the decoders speak about the files
they fail on; without it they stay quiet (:mod:`hypermodal.common.logs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from hypermodal import __version__
from hypermodal.cli import crossval, data, export, gather, model, predict, simulate
from hypermodal.cli import sort as sort_command
from hypermodal.cli._common import (
    EngineOption,
    HelpCommand,
    HelpGroup,
    RayAddressOption,
    friendly_errors,
)

__all__ = ["EngineOption", "RayAddressOption", "app", "friendly_errors", "main"]

app = typer.Typer(
    cls=HelpGroup,
    help="Sort medical images by imaging modality (CT, MR, PET, X-ray) at archive scale.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hypermodal {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Debug logging, and what the decoders say about the files they fail on.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Set up logging on stderr; without ``--verbose`` the decoders' own log records, warnings
    and backtraces about files the stages handle stay quiet (the reasons are in the errors
    files)."""
    from hypermodal.common.logs import configure_logging

    configure_logging(verbose)


def _command(name: str, func: Callable[..., Any]) -> None:
    app.command(name, cls=HelpCommand)(friendly_errors(func))


# The order here is the order of ``hypermodal --help``.
_command("samples", gather.samples)
_command("catalog", data.catalog)
_command("split", data.split)
_command("store", data.store)
_command("train", model.train)
_command("evaluate", model.evaluate)
_command("predict", predict.predict)
_command("sort", sort_command.sort)
_command("demo", model.demo)
_command("info", data.info)
_command("build", gather.build)
_command("fetch", gather.fetch)
_command("plan", gather.plan)
_command("shard", data.shard)
_command("synth", data.synth)
_command("simulate", simulate.simulate)
_command("crossval", crossval.crossval)
_command("export", export.export)
