"""Plan a corpus at series level from the IDC index or a local listing, before downloading."""

from __future__ import annotations

from hypermodal.sources.plan.build import (
    SpecError,
    apply_caps,
    build_plan,
    load_spec,
    paper_spec,
    parse_spec,
    plan_from_index,
    write_plan,
)

__all__ = [
    "SpecError",
    "apply_caps",
    "build_plan",
    "load_spec",
    "paper_spec",
    "parse_spec",
    "plan_from_index",
    "write_plan",
]
