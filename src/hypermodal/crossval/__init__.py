"""Cross-validation by dataset (``hypermodal crossval``) and the default model it trains.

* :mod:`.folds` — leave-one-dataset-out (or grouped) folds that never train on the held-out
  dataset or on images simulated from it;
* :mod:`.pixels` — the CNN of one fold;
* :mod:`.scoring` — scores per evidence mode, balanced accuracy first;
* :mod:`.run` — the whole run; :mod:`.report` — its Markdown; :mod:`.bundle` — the final model.
"""

from hypermodal.crossval.folds import Fold, check_folds, make_folds, real_datasets
from hypermodal.crossval.run import CLASSES, run_crossval, vocabulary

__all__ = [
    "CLASSES",
    "Fold",
    "check_folds",
    "make_folds",
    "real_datasets",
    "run_crossval",
    "vocabulary",
]
