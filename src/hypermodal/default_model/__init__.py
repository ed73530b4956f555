"""The model ``hypermodal predict`` uses when no ``--model`` is given.

``hypermodal-default.pt`` is trained by one command from the bundled corpus and its simulations
(see ``MODEL_CARD.md`` beside it, which also holds its cross-validation table)::

    make default-model   # = hypermodal crossval --out runs/default --save-model <this folder>/...
"""

from __future__ import annotations

from pathlib import Path

#: The bundled checkpoint (CNN + feature forest + fusion; classes CT, MR, PT, XR, OTHER).
MODEL_PATH = Path(__file__).with_name("hypermodal-default.pt")
#: What it was trained on, how it scored on unseen datasets, and its known limits.
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")
