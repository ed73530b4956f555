"""The split plan: which split each dataset belongs to, and the rules that select its images.

A plan is saved once as JSON (:meth:`SplitPlan.save`) with a hash of its content, and reused.
:meth:`SplitPlan.load` also reads explicit split files: a JSON/YAML mapping ``{dataset: split}``
or ``{split: [datasets]}`` (as in the paper's Appendix A), or a CSV with columns
``dataset,split``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypermodal.common.errors import SplitError
from hypermodal.common.files import write_text_atomic

SPLITS = ("train", "validate", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)
#: The paper's per-dataset caps (§2.2): at most 50,000 CT and 100,000 MR images per dataset.
DEFAULT_CAPS: dict[str, int] = {"CT": 50_000, "MR": 100_000}
CAP_ORDERS = ("catalog", "spread")
#: Other names people write for the validation split.
SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}


def split_name(text: str) -> str:
    """``text`` lower-cased, with the aliases of the validation split resolved (``Val`` →
    ``validate``); whether the result is one of :data:`SPLITS` is for the caller to check."""
    lowered = text.lower()
    return SPLIT_ALIASES.get(lowered, lowered)


@dataclass
class SplitPlan:
    """Which split each dataset belongs to, and how it was decided."""

    assignments: dict[str, str]
    method: str  # "auto" or "file"
    seed: int | None = None
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    exclude_localizers: bool = True
    quality: dict[str, Any] = field(default_factory=dict)
    #: which images a cap keeps: "catalog" = the first ones in catalog order (the paper's rule);
    #: "spread" = evenly spaced ones, so a capped volume keeps slices from its whole extent
    cap_order: str = "catalog"
    #: how many of the datasets are synthetic (simulated or augmented: always in train); a
    #: record only, not part of :attr:`hash`
    synthetic_datasets: int = 0

    def __post_init__(self) -> None:
        if self.cap_order not in CAP_ORDERS:
            raise SplitError(f"cap_order must be one of {CAP_ORDERS}, got {self.cap_order!r}")

    @property
    def hash(self) -> str:
        """16 hex digits over the assignments, caps, localizer rule and (if not the paper's
        ``"catalog"``) the cap order: what decides which images land in which split."""
        content: dict[str, Any] = {
            "assignments": dict(sorted(self.assignments.items())),
            "caps": dict(sorted(self.caps.items())),
            "exclude_localizers": self.exclude_localizers,
        }
        if self.cap_order != "catalog":  # keeps the hashes of "catalog" split files unchanged
            content["cap_order"] = self.cap_order
        payload = json.dumps(content, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "method": self.method,
            "seed": self.seed,
            "ratios": list(self.ratios),
            "caps": self.caps,
            "exclude_localizers": self.exclude_localizers,
            "cap_order": self.cap_order,
            "synthetic_datasets": self.synthetic_datasets,
            "hash": self.hash,
            "quality": self.quality,
            "assignments": dict(sorted(self.assignments.items())),
        }

    def save(self, path: Path | str) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> SplitPlan:
        """Load a split written by :meth:`save`, or an explicit split file.

        Explicit files: JSON/YAML mapping ``{dataset: split}`` (or ``{split: [datasets]}``), or a
        CSV with columns ``dataset,split``.

        Raises:
            FileNotFoundError: no file at ``path``.
            SplitError: unreadable content, unknown split names, or a saved plan whose content
                does not match its recorded hash.
        """
        path = Path(path)
        data = _read_split_file(path)
        if "assignments" not in data:
            return cls(assignments=_normalise_assignments(data, path), method="file")
        plan = cls(
            assignments=_normalise_assignments(data["assignments"], path),
            method=data.get("method", "file"),
            seed=data.get("seed"),
            ratios=tuple(data.get("ratios", DEFAULT_RATIOS)),  # type: ignore[arg-type]
            caps={k: int(v) for k, v in data.get("caps", DEFAULT_CAPS).items()},
            exclude_localizers=bool(data.get("exclude_localizers", True)),
            quality=data.get("quality", {}),
            cap_order=str(data.get("cap_order", "catalog")),
            synthetic_datasets=int(data.get("synthetic_datasets", 0)),
        )
        if data.get("hash") and data["hash"] != plan.hash:
            raise SplitError(f"{path}: content does not match its recorded hash (edited?)")
        return plan


def _read_split_file(path: Path) -> dict[str, Any]:
    """The mapping in a CSV, YAML or JSON split file."""
    if not path.exists():
        raise FileNotFoundError(f"split file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"dataset", "split"} <= set(reader.fieldnames):
                raise SplitError(f"{path}: a CSV split file needs columns dataset,split")
            data: Any = {row["dataset"]: row["split"] for row in reader}
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SplitError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SplitError(f"{path}: expected a mapping of dataset to split")
    return data


def _normalise_assignments(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """``{dataset: split}`` from either layout, split names lower-cased and aliases resolved."""
    out: dict[str, str] = {}
    if set(map(str, data)) <= set(SPLITS) | set(SPLIT_ALIASES) and all(
        isinstance(v, list) for v in data.values()
    ):
        for split, names in data.items():
            for name in names:
                out[str(name)] = split_name(str(split))
    else:
        out = {str(k): split_name(str(v)) for k, v in data.items()}
    bad = {k: v for k, v in out.items() if v not in SPLITS}
    if bad:
        raise SplitError(f"{path}: unknown split names {bad}; use train/validate/test")
    return out
