"""What a ``predict`` run did: the counts that reconcile, and the one-screen text about them.

Every file seen is *predicted* (at least one of its images decoded and classified),
*sampled out* (its series was decided from other files; it still counts in the series' number
of images) or *skipped* (unreadable: in the errors file with its reason), so
``files_seen = files_predicted + files_sampled_out + files_skipped``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.evidence.fusion import UNKNOWN


@dataclass
class PredictSummary:
    """The counts of one ``predict`` run (its JSON summary).

    Attributes:
        files_seen: Files found under the inputs.
        files_predicted: Files with at least one image decoded and classified.
        files_sampled_out: Files of a decided series that no sample fell on (not decoded).
        files_skipped: Unreadable files (in the errors file).
        series: Series/volumes decided (rows of the series table).
        images: Images decoded and classified (rows of the per-image table).
        images_in_series: Images the decided series hold by their headers, decoded or not.
        series_per_class: Series per predicted class (``UNKNOWN`` included).
        images_per_class: Images (by the headers) per predicted class of their series.
        conflicts: Series whose header claims another class than their images show.
        unknowns: Series below the confidence threshold (``UNKNOWN``).
        slices: Images sampled per series (None: every image).
        errors_file: Where the unreadable files are listed.
        report: The archive report's page, when one was asked for.
        warnings: What a user should know (the model's limits, an input without images).
    """

    files_seen: int = 0
    files_predicted: int = 0
    files_sampled_out: int = 0
    files_skipped: int = 0
    series: int = 0
    images: int = 0
    images_in_series: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    series_per_second: float = 0.0
    model: str = ""
    slices: int | None = None
    series_per_class: dict[str, int] = field(default_factory=dict)
    images_per_class: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    unknowns: int = 0
    errors_file: str = ""
    report: str = ""
    warnings: list[str] = field(default_factory=list)

    def reconciles(self) -> bool:
        """Whether every file seen is predicted, sampled out or skipped, exactly once."""
        return self.files_seen == self.files_predicted + self.files_sampled_out + self.files_skipped

    def count(self, series: pd.DataFrame, images: pd.DataFrame) -> None:
        """Fill the per-class counts, conflicts and unknowns from the two tables."""
        self.series = len(series)
        self.images = len(images)
        if not len(series):
            return
        sizes = series["num_images"].astype(int)
        self.images_in_series = int(sizes.sum())
        by_class = series.groupby("prediction", sort=True)
        self.series_per_class = {str(c): int(n) for c, n in by_class.size().items()}
        per_class = sizes.groupby(series["prediction"]).sum()
        self.images_per_class = {str(c): int(n) for c, n in per_class.items()}
        self.conflicts = int((series["agreement"] == "conflict").sum())
        self.unknowns = int((series["prediction"] == UNKNOWN).sum())


def summary_dict(summary: PredictSummary) -> dict[str, Any]:
    """The summary as plain values (for the JSON printed on stdout)."""
    return asdict(summary)


def summary_text(summary: PredictSummary, conflicts: pd.DataFrame | None = None) -> str:
    """The one-screen account printed on stderr at the end of ``predict``.

    Args:
        summary: The run's counts.
        conflicts: The conflicting series rows (the first few are named, with what the header
            claims, what the pixels and the features say, and the decision).

    Returns:
        A few lines: files and what became of them, series and images per class, conflicts,
        unknowns, errors (with the errors file), the model and the time taken.
    """
    s = summary
    sampled = "every image" if s.slices is None else f"up to {s.slices} images per series"
    lines = [
        f"{s.files_seen:,} files: {s.files_predicted:,} decoded, {s.files_sampled_out:,} "
        f"sampled out, {s.files_skipped:,} unreadable; {s.images:,} images classified "
        f"({sampled}) in {s.seconds:.1f} s",
    ]
    if s.series:
        width = max(len("class"), *(len(c) for c in s.series_per_class))
        lines.append(f"  {'class':<{width}}  {'series':>8}  {'images':>10}")
        for name, n in s.series_per_class.items():
            lines.append(f"  {name:<{width}}  {n:>8,}  {s.images_per_class.get(name, 0):>10,}")
        lines.append(f"  {'all':<{width}}  {s.series:>8,}  {s.images_in_series:>10,}")
    lines.append(f"conflicts: {s.conflicts} series whose header claims another class")
    if conflicts is not None and len(conflicts):
        for _, row in conflicts.head(5).iterrows():
            lines.append(
                f"  {row['path']}: header {row['header_label']}, pixels "
                f"{row['pixel_prediction']}, features {row['feature_prediction']} "
                f"-> {row['prediction']}"
            )
        if len(conflicts) > 5:
            lines.append(f"  … and {len(conflicts) - 5} more (agreement = conflict in the table)")
    lines.append(f"unknown: {s.unknowns} series below the confidence threshold")
    errors = f" (reasons in {s.errors_file})" if s.files_skipped else ""
    lines.append(f"errors: {s.files_skipped} files could not be read{errors}")
    lines.append(f"model: {s.model}")
    lines += [f"warning: {w}" for w in s.warnings]
    return "\n".join(lines)


def default_model_path() -> Path:
    """The model ``predict`` uses without ``--model``: the one the package ships."""
    from hypermodal.default_model import MODEL_PATH

    return MODEL_PATH


def model_warnings(loaded: Any) -> list[str]:
    """What a user should know about the model before trusting its labels."""
    notes: list[str] = []
    if loaded.evidence is None:
        notes.append(
            f"{loaded.meta.get('path')}: no feature model or fusion in this checkpoint: "
            "the CNN alone decides (the header is only compared with it)"
        )
        return notes
    info = loaded.evidence.info
    trained = info.get("trained_classes")
    if trained:
        unseen = [c for c in loaded.classes if c not in trained]
        if unseen:
            notes.append(f"the model never saw {', '.join(unseen)} in training but may predict it")
    real = info.get("real_classes")
    if real:
        simulated_only = [c for c in (trained or loaded.classes) if c not in real]
        if simulated_only:
            notes.append(
                f"{', '.join(simulated_only)}: trained on simulated images only (no real "
                "images of it were available); treat its labels with care"
            )
    return notes
