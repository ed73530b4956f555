"""The catalog stage: one row per 2D image, from headers only (:mod:`.build`), and what its
rows and dataset folders hold (:mod:`.schema`)."""

from hypermodal.catalog.build import (
    build_catalog,
    catalog_vocabulary,
    discover,
    errors_path,
    excluded_path,
    listing_hash,
    read_catalog,
    summary_path,
)
from hypermodal.catalog.schema import (
    CATALOG_COLUMNS,
    DATASET_FILE,
    REQUIRED_COLUMNS,
    SCHEMA,
    SKIP_NAMES,
    CatalogSummary,
    DatasetInfo,
    FileTask,
)

__all__ = [
    "CATALOG_COLUMNS",
    "DATASET_FILE",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "SKIP_NAMES",
    "CatalogSummary",
    "DatasetInfo",
    "FileTask",
    "build_catalog",
    "catalog_vocabulary",
    "discover",
    "errors_path",
    "excluded_path",
    "listing_hash",
    "read_catalog",
    "summary_path",
]
