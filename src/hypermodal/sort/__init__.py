"""Sort an archive by modality: ``DST/<class>/<patient>/<study>/<series>/<file>``.

The series decisions of :func:`hypermodal.inference.classify` (or a series table ``predict``
wrote) give each file its place (:mod:`~hypermodal.sort.layout`), names are made safe
(:mod:`~hypermodal.sort.names`), and files are linked or copied without ever overwriting
(:mod:`~hypermodal.sort.place`); :func:`sort_archive` runs it all (:mod:`~hypermodal.sort.run`).
"""

from hypermodal.sort.names import safe_name
from hypermodal.sort.place import MODES, place
from hypermodal.sort.run import MANIFEST_NAME, SortSummary, sort_archive, summary_text

__all__ = [
    "MANIFEST_NAME",
    "MODES",
    "SortSummary",
    "place",
    "safe_name",
    "sort_archive",
    "summary_text",
]
