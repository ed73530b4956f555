"""The series-level index of NCI's Imaging Data Commons (IDC), read offline with duckdb.

The PyPI package ``idc-index-data`` ships ``idc_index.parquet``: one row per DICOM series of
IDC (about 1.04 million series, 58.8 million instances, 179 collections in version 25), with
``collection_id``, ``PatientID``, ``StudyInstanceUID``, ``SeriesInstanceUID``, ``Modality``,
``BodyPartExamined``, ``instanceCount``, ``series_size_MB``, ``series_aws_url``,
``license_short_name``, ``sop_class_name`` and more. :func:`query_series` selects the series a
corpus plan needs without loading the whole index into memory.

A *local catalog* (for example a TCIA/NBIA series listing exported to CSV or Parquet) can stand
in for the index: it needs at least ``collection_id``, ``SeriesInstanceUID``, ``Modality`` and
``instanceCount``; the other columns are filled with nulls when absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from hypermodal.common.errors import IndexSourceError

#: Columns a plan reads, and their types when a local catalog lacks them.
SERIES_COLUMNS: dict[str, str] = {
    "collection_id": "VARCHAR",
    "PatientID": "VARCHAR",
    "StudyInstanceUID": "VARCHAR",
    "SeriesInstanceUID": "VARCHAR",
    "Modality": "VARCHAR",
    "BodyPartExamined": "VARCHAR",
    "instanceCount": "BIGINT",
    "series_size_MB": "DOUBLE",
    "series_aws_url": "VARCHAR",
    "license_short_name": "VARCHAR",
    "sop_class_name": "VARCHAR",
    "analysis_result_id": "VARCHAR",
}
REQUIRED_COLUMNS = ("collection_id", "SeriesInstanceUID", "Modality", "instanceCount")

#: SOP classes that carry no image pixels (the LDCT projection data is stored as raw data).
NON_IMAGE_SOP_CLASSES: tuple[str, ...] = ("Raw Data Storage",)

#: Catalog order inside a collection: TCIA returns series patient by patient, study by study.
CATALOG_ORDER = ("collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID")


def default_index_path() -> Path:
    """Where ``idc-index-data`` keeps ``idc_index.parquet``."""
    try:
        import idc_index_data
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FileNotFoundError(
            "the IDC index is not installed: pip install idc-index-data (or pass --index)"
        ) from exc
    return Path(idc_index_data.IDC_INDEX_PARQUET_FILEPATH)


def index_version() -> str | None:
    """The installed ``idc-index-data`` version (IDC data release), or None."""
    try:
        from importlib.metadata import version

        return version("idc-index-data")
    except Exception:  # pragma: no cover
        return None


def _relation_sql(path: Path) -> str:
    text = str(path).replace("'", "''")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return f"read_csv_auto('{text}', header=true)"
    if suffix in (".parquet", ".pq"):
        return f"read_parquet('{text}')"
    raise IndexSourceError(f"{path}: a catalog must be Parquet or CSV, not {suffix or 'no suffix'}")


def available_columns(path: Path | str, con: Any = None) -> list[str]:
    import duckdb

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalog or index {path} not found")
    con = con or duckdb.connect()
    return [row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {_relation_sql(path)}").fetchall()]


def query_series(
    path: Path | str | None = None,
    collections: Iterable[str] | None = None,
    modalities: Iterable[str] | None = None,
    include_analysis_results: bool = False,
    exclude_sop_classes: Iterable[str] = NON_IMAGE_SOP_CLASSES,
) -> pd.DataFrame:
    """Series of ``collections`` (all when None) with a Modality in ``modalities``, in catalog
    order (:data:`CATALOG_ORDER`), with the columns of :data:`SERIES_COLUMNS`.

    Series that IDC added as analysis results (``analysis_result_id`` set: derived data such as
    AI segmentations, not part of the original collections) are left out unless asked for.
    """
    import duckdb

    path = Path(path) if path is not None else default_index_path()
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    present = set(available_columns(path, con))
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise IndexSourceError(
            f"{path}: a series catalog needs columns {list(REQUIRED_COLUMNS)}; missing {missing}"
        )
    select = ", ".join(
        f'"{c}"' if c in present else f'CAST(NULL AS {t}) AS "{c}"'
        for c, t in SERIES_COLUMNS.items()
    )
    where: list[str] = []
    params: list[Any] = []
    if collections is not None:
        cols = sorted(set(collections))
        if not cols:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SERIES_COLUMNS})
        where.append(f"collection_id IN ({', '.join('?' * len(cols))})")
        params += cols
    if modalities is not None:
        mods = sorted({m.upper() for m in modalities})
        where.append(f"upper(Modality) IN ({', '.join('?' * len(mods))})")
        params += mods
    if not include_analysis_results and "analysis_result_id" in present:
        where.append("analysis_result_id IS NULL")
    excluded = list(exclude_sop_classes)
    if excluded and "sop_class_name" in present:
        where.append(
            f"(sop_class_name IS NULL OR sop_class_name NOT IN ({', '.join('?' * len(excluded))}))"
        )
        params += excluded
    order = ", ".join(f'"{c}"' for c in CATALOG_ORDER)
    sql = f"SELECT {select} FROM {_relation_sql(path)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    df = con.execute(sql, params).df()
    df["instanceCount"] = df["instanceCount"].fillna(0).astype("int64")
    return df


def list_collections(path: Path | str | None = None) -> list[str]:
    """Every collection_id in the index (or local catalog)."""
    import duckdb

    path = Path(path) if path is not None else default_index_path()
    rows = duckdb.connect().sql(
        f"SELECT DISTINCT collection_id FROM {_relation_sql(path)} ORDER BY 1"
    )
    return [r[0] for r in rows.fetchall()]


def collection_locations(index_path: Path | str | None = None) -> dict[str, str]:
    """``collection_id`` → IDC's ``tumor_locations`` text (from ``collections_index.parquet``
    beside the series index), used as a body location where ``BodyPartExamined`` is empty."""
    import duckdb

    base = Path(index_path) if index_path is not None else default_index_path()
    path = base.with_name("collections_index.parquet")
    if not path.exists():
        return {}
    rows = (
        duckdb.connect()
        .sql(f"SELECT collection_id, tumor_locations FROM read_parquet('{path}')")
        .fetchall()
    )
    return {str(c): str(t) for c, t in rows if t}
