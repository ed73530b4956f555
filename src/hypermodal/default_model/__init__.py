"""The model ``hypermodal predict`` uses when no ``--model`` is given.

``hypermodal-default.onnx.zip`` is an ONNX model bundle (:mod:`hypermodal.inference.onnx_bundle`):
the CNN as ONNX with its float16 weights (widened to float32 when loaded), the feature forests
and the fitted fusion. It runs on ONNX Runtime, so ``pip install hypermodal`` predicts without
PyTorch; where PyTorch is installed, ``load_model(MODEL_PATH, backend="torch")`` rebuilds the
same network from its weights. It is trained by one command from the bundled corpus and its
simulations (see ``MODEL_CARD.md`` beside it, which also holds its cross-validation table)::

    make default-model   # hypermodal crossval --save-model ... writes the .pt and this bundle
"""

from __future__ import annotations

from pathlib import Path

#: The bundled model (CNN + feature forest + fusion; classes CT, MR, PT, XR, OTHER).
MODEL_PATH = Path(__file__).with_name("hypermodal-default.onnx.zip")
#: What it was trained on, how it scored on unseen datasets, and its known limits.
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")
