"""The class vocabulary: which classes exist, in which order, and how DICOM Modality maps to them.

The class order is data. It is stored with every catalog, checkpoint and report, and a model's
output index ``i`` always means ``vocabulary.classes[i]`` of the vocabulary saved with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.common.files import write_text_atomic

#: The paper's four classes, in the order used by default.
DEFAULT_CLASSES: tuple[str, ...] = ("CT", "MR", "PT", "XR")

#: DICOM Modality (0008,0060) -> class. Projection radiography families map to XR.
DEFAULT_MODALITY_MAP: dict[str, str] = {
    "CT": "CT",
    "MR": "MR",
    "PT": "PT",
    "CR": "XR",
    "DX": "XR",
    "MG": "XR",
    "RF": "XR",
    "XA": "XR",
}

#: Names people write for a class that are not DICOM codes (used for non-DICOM metadata).
CLASS_ALIASES: dict[str, str] = {
    "PET": "PT",
    "MRI": "MR",
    "XRAY": "XR",
    "X-RAY": "XR",
}


@dataclass(frozen=True)
class ClassVocabulary:
    """Ordered classes plus the DICOM Modality mapping.

    >>> v = ClassVocabulary()
    >>> v.label_for_modality("DX"), v.label_for_modality("US")
    ('XR', None)
    >>> v.index("MR")
    1
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    modality_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODALITY_MAP))
    #: Class that receives every modality not in ``modality_map`` (for example "OTHER");
    #: ``None`` excludes such images.
    other: str | None = None

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class names in {self.classes}")
        if not self.classes:
            raise ValueError("a vocabulary needs at least one class")
        unknown = sorted({c for c in self.modality_map.values() if c not in self.classes})
        if unknown:
            raise ValueError(f"modality map targets classes not in the vocabulary: {unknown}")
        if self.other is not None and self.other not in self.classes:
            raise ValueError(f"class {self.other!r} for other modalities is not in {self.classes}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        return self.classes.index(label)

    def label_for_modality(self, modality: str | None) -> str | None:
        """Class for a DICOM Modality value, or ``None`` when the image is excluded."""
        if not modality:
            return None
        code = str(modality).strip().upper()
        if code in self.modality_map:
            return self.modality_map[code]
        return self.other

    def normalise_label(self, label: str | None) -> str | None:
        """Map a free-text class name ("PET", "mri", "CR") to a class of this vocabulary."""
        if label is None:
            return None
        code = str(label).strip().upper()
        code = CLASS_ALIASES.get(code, code)
        if code in self.classes:
            return code
        return self.label_for_modality(code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "modality_map": dict(self.modality_map),
            "other": self.other,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassVocabulary:
        return cls(
            classes=tuple(data["classes"]),
            modality_map=dict(data.get("modality_map", DEFAULT_MODALITY_MAP)),
            other=data.get("other"),
        )

    @classmethod
    def from_options(
        cls,
        classes: str | None = None,
        extra_modalities: Mapping[str, str] | None = None,
        drop_modalities: tuple[str, ...] = (),
        other: str | None = None,
    ) -> ClassVocabulary:
        """Vocabulary from CLI-style options: ``classes="CT,MR,PT,XR,OTHER"``, ``other="OTHER"``."""
        names = tuple(c.strip().upper() for c in classes.split(",")) if classes else DEFAULT_CLASSES
        mapping = {k: v for k, v in DEFAULT_MODALITY_MAP.items() if v in names}
        for code in drop_modalities:
            mapping.pop(code.upper(), None)
        for code, target in (extra_modalities or {}).items():
            mapping[code.upper()] = target.upper()
        return cls(classes=names, modality_map=mapping, other=other.upper() if other else None)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> ClassVocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))
