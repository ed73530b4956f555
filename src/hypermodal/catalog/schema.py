"""What a catalog holds: its columns, what a dataset folder says about itself, the counts.

Columns (:data:`CATALOG_COLUMNS`), one row per 2D image:

* identity and label: ``dataset, patient, study, series, path, index, label, modality,
  body_part, rows, columns, localizer, template, format, split``;
* geometry from the header (the feature model's evidence, see
  :mod:`hypermodal.evidence.features`): ``frames`` (2D images in the file), ``pixel_spacing``
  and ``slice_thickness`` (mm, NaN when the header has none), ``bits_stored``, ``samples``
  (samples per pixel: 3 for colour);
* provenance: ``synthetic`` (simulated or augmented, never in validation or test) and
  ``simulated_from`` (the real dataset whose anatomy it was made from), from ``dataset.json``.

Catalogs written before the geometry and provenance columns existed still read: the missing
columns come back as unknown (NaN) and ``synthetic = False``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from hypermodal.common.paths import path_text

DATASET_FILE = "dataset.json"
#: what the program itself writes into the folders it reads or fills (exact names or shell
#: patterns): a fetch's state (``.fetch/``: journal.sqlite, lock, staging), a stream build's
#: (``.build/``) and its scratch folder (``<store>.scratch/``), a store's lock, a catalog's
#: part files (``<catalog>.parts/``), SQLite journals, and temporary files
#: (``.<name>.<pid>.<random>.tmp`` of every atomic write, ``.<name>.part`` of a download)
STATE_NAMES = frozenset(
    {
        ".fetch",
        ".build",
        "*.scratch",
        ".lock",
        "*.parquet.parts",
        "journal.sqlite",
        "journal.sqlite-wal",
        "journal.sqlite-shm",
        "journal.sqlite-journal",
        ".*.tmp",
        ".*.part",
    }
)
#: never inputs, never datasets, not counted: the metadata files of a corpus folder and
#: :data:`STATE_NAMES` (a hidden name of anything else, such as ``.DS_Store``, is counted as
#: excluded; see :func:`hypermodal.catalog.build.discover`)
SKIP_NAMES = frozenset({DATASET_FILE, "samples.json", "summary.json", *STATE_NAMES})

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("patient", pa.string()),
        ("study", pa.string()),
        ("series", pa.string()),
        ("path", pa.string()),
        ("index", pa.int32()),
        ("label", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("localizer", pa.bool_()),
        ("template", pa.bool_()),
        ("format", pa.string()),
        ("split", pa.string()),
        ("frames", pa.int32()),
        ("pixel_spacing", pa.float32()),
        ("slice_thickness", pa.float32()),
        ("bits_stored", pa.float32()),
        ("samples", pa.int16()),
        ("sop_class", pa.string()),
        ("synthetic", pa.bool_()),
        ("simulated_from", pa.string()),
    ]
)
CATALOG_COLUMNS = tuple(SCHEMA.names)
#: The columns every catalog has (older catalogs lack the rest).
REQUIRED_COLUMNS = CATALOG_COLUMNS[: CATALOG_COLUMNS.index("split") + 1]
#: Values of the newer columns in a catalog written without them.
COLUMN_DEFAULTS: dict[str, Any] = {
    "frames": None,
    "pixel_spacing": float("nan"),
    "slice_thickness": float("nan"),
    "bits_stored": float("nan"),
    "samples": None,
    "sop_class": None,
    "synthetic": False,
    "simulated_from": None,
}


@dataclass
class DatasetInfo:
    """What a dataset folder says about itself (``dataset.json``), or defaults.

    ``synthetic`` marks simulated or augmented images (``hypermodal simulate``), and
    ``simulated_from`` names the real dataset they were made from: the split keeps them in
    training, and cross-validation drops them with their source.
    """

    name: str
    label: str | None = None
    body_part: str | None = None
    template: bool = False
    phantom: bool = False
    synthetic: bool = False
    simulated_from: str | None = None
    file_modality: dict[str, str] = field(default_factory=dict)  # relative path -> modality

    @classmethod
    def from_folder(cls, folder: Path, default_name: str) -> DatasetInfo:
        meta_path = folder / DATASET_FILE
        try:
            present = meta_path.is_file()  # a FIFO named dataset.json is not read
        except OSError:  # a folder that cannot be looked into: its listing says why
            present = False
        if not present:
            return cls(name=path_text(default_name))
        meta = json.loads(meta_path.read_text())
        per_file = {
            f["path"]: f["modality"]
            for f in meta.get("files", [])
            if isinstance(f, dict) and f.get("path") and f.get("modality")
        }
        return cls(
            name=str(meta.get("name") or path_text(default_name)),
            label=meta.get("label"),
            body_part=meta.get("body_part"),
            template=bool(meta.get("template", False)),
            phantom=bool(meta.get("phantom", False)),
            synthetic=bool(meta.get("synthetic", False)),
            simulated_from=meta.get("simulated_from"),
            file_modality=per_file,
        )


def exclusion_reason(modality: str | None, label: str | None) -> str:
    """Why a readable image is excluded: its modality (or label) is not a class."""
    if modality:
        return f"excluded: modality {modality} is not a class of the vocabulary"
    if label:
        return f"excluded: label {label} is not a class of the vocabulary"
    return "excluded: no modality in the header and no label in dataset.json"


@dataclass(slots=True)
class FileTask:
    """One input of the catalog, as listed (paths are :func:`~hypermodal.common.paths.path_text`).

    ``excluded`` or ``skipped`` holds the reason when the listing already decided the input is
    not read: a hidden name or a second link to a folder is counted as excluded, a folder that
    cannot be listed as skipped, each with its path and reason.
    """

    path: str
    dataset: str
    rel: str  # path relative to the dataset folder
    label: str | None
    body_part: str | None
    template: bool
    modality_hint: str | None
    synthetic: bool = False
    simulated_from: str | None = None
    excluded: str | None = None
    skipped: str | None = None

    def unread(self) -> tuple[str, str] | None:
        """``("excluded" | "skipped", reason)`` when the listing decided; None: read it."""
        if self.skipped is not None:
            return "skipped", self.skipped
        if self.excluded is not None:
            return "excluded", self.excluded
        return None


@dataclass
class CatalogSummary:
    files_seen: int = 0
    files_cataloged: int = 0
    # modality (or label) not a class of the vocabulary, a hidden name, a second way into a
    # folder: each listed by path in the excluded file (excluded_modalities counts the first)
    files_excluded: int = 0
    files_skipped: int = 0  # unreadable, corrupt, not an image or not a file: the errors file
    images: int = 0
    images_per_class: dict[str, int] = field(default_factory=dict)
    excluded_modalities: dict[str, int] = field(default_factory=dict)
    datasets: int = 0
    synthetic_images: int = 0
    seconds: float = 0.0

    def reconciles(self) -> bool:
        return self.files_seen == self.files_cataloged + self.files_excluded + self.files_skipped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
