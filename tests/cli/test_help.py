"""``--help`` of every command reads like a finished tool; ``--version``; ``python -m`` runs."""

import re
import subprocess
import sys

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

import hypermodal
from hypermodal.cli import app

runner = CliRunner()
COMMANDS = [
    "samples",
    "catalog",
    "split",
    "store",
    "train",
    "evaluate",
    "predict",
    "sort",
    "demo",
    "info",
    "build",
    "fetch",
    "plan",
    "shard",
    "synth",
    "simulate",
    "crossval",
    "export",
]
#: Typer's own ``<type>`` placeholders, e.g. ``<bool>``, ``<path>``, ``<list[Path]>``
TYPE_PLACEHOLDER = re.compile(r"<(?:bool|int|float|str|path|file|dir|directory|list\[[^\]]*\])>")
WIDE = {"COLUMNS": "240", "TERMINAL_WIDTH": "240"}


def click_command(name):
    return typer.main.get_command(app).commands[name]


def shown_default(param):
    if param.default is None:
        return None  # nothing to show (tri-state flags such as --balance/--no-balance too)
    if isinstance(param, TyperOption) and param.is_flag:
        if not param.secondary_opts:
            return None  # a plain flag such as --dry-run: off unless given
        flag = param.opts[0] if param.default else param.secondary_opts[0]
        return flag.lstrip("-")
    return str(param.default)


def test_the_commands_are_exactly_these():
    assert list(typer.main.get_command(app).commands) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert not TYPE_PLACEHOLDER.findall(result.output), result.output
    for param in click_command(command).params:
        default = shown_default(param)
        if default is not None:
            assert f"[default: {default}]" in result.output, (param.name, result.output)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_value_is_named(command):
    for param in click_command(command).params:
        if isinstance(param, TyperArgument):
            assert param.metavar and param.metavar.isupper(), param.name
        elif isinstance(param, TyperOption) and not param.is_flag:
            assert param.metavar and param.metavar == param.metavar.upper(), param.name


def test_help_shows_metavars_and_no_metavar_for_flags():
    out = runner.invoke(app, ["split", "--help"], env=WIDE).output
    assert re.search(r"--out\s+-o\s+FILE\s+Split file", out)
    assert re.search(r"--seed\s+N\s+Seed", out)
    assert re.search(r"--no-caps\s+Keep every image", out)
    assert re.search(r"--help\s+Show this message", out)
    assert re.search(r"CATALOG\s+Catalog Parquet", out)


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0
    assert not TYPE_PLACEHOLDER.findall(result.output), result.output
    for command in COMMANDS:
        assert re.search(rf"^\W*{command}\s", result.output, re.MULTILINE), command
    assert "--version" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"hypermodal {hypermodal.__version__}\n"


@pytest.mark.parametrize("module", ["hypermodal", "hypermodal.cli"])
def test_python_dash_m(module):
    version = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"hypermodal {hypermodal.__version__}\n"
    helped = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "Usage: hypermodal" in helped.stdout
    assert "samples" in helped.stdout and "synth" in helped.stdout


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hypermodal.cli import app\n"
        "for c in [[]] + [[n] for n in " + repr(COMMANDS) + "]:\n"
        "    assert CliRunner().invoke(app, [*c, '--help']).exit_code == 0\n"
        "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
