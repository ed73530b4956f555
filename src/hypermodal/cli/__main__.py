"""``python -m hypermodal.cli`` (as torchrun starts it): the command line."""

from hypermodal.cli import app

app(prog_name="hypermodal")
