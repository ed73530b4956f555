"""``python -m hypermodal``: the command line."""

from hypermodal.cli import app

app(prog_name="hypermodal")
