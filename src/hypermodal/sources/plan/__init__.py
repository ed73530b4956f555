"""Plan a corpus at series level from the IDC index or a local listing, before downloading.

Modules: :mod:`~.spec` (the corpus spec and the bundled paper spec), :mod:`~.idc_index` (the
series catalog), :mod:`~.build` (caps, splits, one row per series), :mod:`~.summary` (counts per
class, split and dataset; the comparison with the paper) and :mod:`~.report` (the files written).
"""

from __future__ import annotations

from hypermodal.common.errors import SpecError
from hypermodal.sources.plan.build import (
    PLAN_COLUMNS,
    CorpusPlan,
    apply_caps,
    build_plan,
    plan_from_index,
)
from hypermodal.sources.plan.report import summary_markdown, write_plan
from hypermodal.sources.plan.spec import (
    CorpusSpec,
    DatasetSpec,
    load_spec,
    paper_spec,
    paper_spec_path,
    parse_spec,
)
from hypermodal.sources.plan.summary import compare_with_paper, summarise

__all__ = [
    "PLAN_COLUMNS",
    "CorpusPlan",
    "CorpusSpec",
    "DatasetSpec",
    "SpecError",
    "apply_caps",
    "build_plan",
    "compare_with_paper",
    "load_spec",
    "paper_spec",
    "paper_spec_path",
    "parse_spec",
    "plan_from_index",
    "summarise",
    "summary_markdown",
    "write_plan",
]
