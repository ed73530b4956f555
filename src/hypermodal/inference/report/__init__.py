"""The archive report: one self-contained HTML page that shows what an archive holds.

:func:`write_archive_report` takes ``predict``'s tables (one row per image, one per series) and
writes ``index.html`` — counts per class and per source folder, a thumbnail of every conflict
and every ``UNKNOWN``, a contact sheet per class, the confidence histograms and the errors — with
the tables beside it. Thumbnails are read from the original files (:mod:`.thumbnails`); the
page needs no network and no script (:mod:`.html`).
"""

from hypermodal.inference.report.html import (
    DEFAULT_MAX_FLAGGED,
    DEFAULT_MAX_PER_SHEET,
    write_archive_report,
)

__all__ = ["DEFAULT_MAX_FLAGGED", "DEFAULT_MAX_PER_SHEET", "write_archive_report"]
