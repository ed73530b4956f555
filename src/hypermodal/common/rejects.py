"""The errors file: one JSON line per input that could not be used, with its reason.

Every stage that reads many inputs keeps going past a bad one and records it here, so that the
summary counts reconcile (inputs seen = inputs used + inputs skipped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hypermodal.common.files import open_atomic


def error_record(path: str, stage: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "stage": stage, "reason": reason, **extra}


def write_errors(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write ``records`` as JSON lines, atomically; return how many were written."""
    n = 0
    with open_atomic(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(dict(rec), default=str) + "\n")
            n += 1
    return n


def read_errors(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
