"""Intensity and geometry evidence: numbers an image carries besides its min-max pixels.

The paper's preprocessing throws away the scale of the values (per-image min-max), yet the scale
is the strongest evidence there is: CT is in Hounsfield units (air near -1000, water and soft
tissue near 0, a bone tail above +300), PET is non-negative, mostly near zero and heavy-tailed,
MR has an arbitrary non-negative scale with a dark noisy background, radiographs are single 2D
images of a large, finely sampled detector with 10–16 bits stored. This module turns one decoded
image (float32, in the source's own units) and its header geometry into a fixed-length vector.

Nothing here reads the Modality tag, the file name or the file format: the feature model must
learn the modality from what the image *is*, so that the header can be checked against it.

Two halves, computed where the data already is:

* :func:`image_stats` — from the decoded values (the store build and ``predict`` call it on the
  image they decode anyway; no second decode pass);
* :func:`header_geometry` — from the header (the catalog calls it while it reads headers).

:func:`feature_matrix` joins them (plus the number of images in the series) in
:data:`FEATURE_NAMES` order; a missing value is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Intensity statistics of one decoded image, in :func:`image_stats` order.
STAT_NAMES: tuple[str, ...] = (
    "q01",
    "q05",
    "q25",
    "q50",
    "q75",
    "q95",
    "q99",
    "vmin",
    "vmax",
    "mean",
    "std",
    "frac_air",  # <= -500 (air in HU)
    "frac_fat",  # -200 .. -30
    "frac_soft",  # -30 .. 100 (water, soft tissue in HU)
    "frac_bone",  # >= 300
    "frac_negative",
    "frac_zero",
    "frac_at_min",  # background at the minimum value
    "frac_integer",
    "log_distinct",  # log10 of distinct values in the sample
    "roughness",  # median |neighbour difference| over the robust range
    "tail",  # (q99 - q50) / (q75 - q25): heavy tail
    "rel_mean",  # (mean - min) / (max - min)
    "rel_median",
    "foreground",  # share above 10 % of the robust range
    "depth_contrast",  # rank correlation of value and depth in the object's brighter half
)

#: Geometry from the header, in :func:`header_geometry` order (``images_in_series`` is added by
#: :func:`feature_matrix` from the table).
GEOMETRY_NAMES: tuple[str, ...] = (
    "rows",
    "columns",
    "log_aspect",
    "frames",
    "pixel_spacing",
    "slice_thickness",
    "bits_stored",
    "samples",
    "images_in_series",
)

FEATURE_NAMES: tuple[str, ...] = STAT_NAMES + GEOMETRY_NAMES

#: Pixels sampled per image for the statistics (a regular grid, so the result is deterministic).
SAMPLE_PIXELS = 65_536


def _grid_sample(image: np.ndarray, n: int = SAMPLE_PIXELS) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(image.size / n))))
    return image[::step, ::step]


def image_stats(image: np.ndarray) -> np.ndarray:
    """The :data:`STAT_NAMES` of one decoded 2D image (float32 vector).

    Non-finite values are left out; an image with none finite gives all-NaN statistics (the
    models treat NaN as "unknown", never as a value).
    """
    grid = np.asarray(_grid_sample(np.asarray(image)), dtype=np.float64)
    out = np.full(len(STAT_NAMES), np.nan, dtype=np.float32)
    finite = np.isfinite(grid)
    every = bool(finite.all())  # the usual case: no masking needed (same values, in order)
    v = grid.ravel() if every else grid[finite]
    if v.size == 0:
        return out
    # quantiles and medians of a sorted copy (ours: no second copy): the same values, and a
    # sort is several times faster than numpy's selection here
    q = np.percentile(np.sort(v), [1, 5, 25, 50, 75, 95, 99], overwrite_input=True)
    vmin, vmax = float(v.min()), float(v.max())
    span = vmax - vmin
    robust = float(q[5] - q[1])
    # neighbour differences along both axes of the sampled grid (finite pairs only)
    masked = grid if every else np.where(finite, grid, np.nan)
    dx = np.abs(np.diff(masked, axis=1))
    dy = np.abs(np.diff(masked, axis=0))
    diffs = np.concatenate([dx.ravel(), dy.ravel()])
    kept = np.isfinite(diffs)
    if not kept.all():
        diffs = diffs[kept]
    rough = 0.0
    if diffs.size and robust > 0:
        rough = float(np.median(np.sort(diffs), overwrite_input=True)) / robust
    iqr = float(q[4] - q[2])
    sample = v if v.size <= 20_000 else v[:: v.size // 20_000]
    values = [
        *q,
        vmin,
        vmax,
        float(v.mean()),
        float(v.std()),
        np.mean(v <= -500),
        np.mean((v > -200) & (v <= -30)),
        np.mean((v > -30) & (v <= 100)),
        np.mean(v >= 300),
        np.mean(v < 0),
        np.mean(v == 0),
        np.mean(v == vmin),
        np.mean(v == np.round(v)),
        np.log10(len(np.unique(sample))),
        rough,
        float(q[6] - q[3]) / iqr if iqr > 0 else 0.0,
        (float(v.mean()) - vmin) / span if span > 0 else 0.0,
        (float(q[3]) - vmin) / span if span > 0 else 0.0,
        np.mean(v > q[1] + 0.1 * robust) if robust > 0 else 0.0,
        depth_contrast(masked, float(q[0]), float(q[6])),
    ]
    out[:] = np.asarray(values, dtype=np.float64)
    return out


#: Pixels of the coarser grid :func:`depth_contrast` works on.
DEPTH_PIXELS = 16_384


def depth_contrast(grid: np.ndarray, low: float, high: float) -> float:
    """Whether an object's brightest tissue lies inside it or at its edge: the rank correlation
    between each pixel's depth in the object (distance to its outline) and its value, over the
    pixels brighter than the object's median.

    The object is what stands above 10 % of the ``low``..``high`` range (holes filled). In a
    brain this is the grey/white contrast that value statistics cannot see: in CT (and any
    window of it) grey matter, at the surface, is brighter than white matter, deep inside, so
    the correlation is strongly negative; in a T1 MR white matter is the brighter, and it is
    near zero or positive. NaN when there is no object of at least 64 pixels, or no brighter
    half of it, to measure.
    """
    from scipy import ndimage, stats

    step = max(1, int(np.ceil(np.sqrt(grid.size / DEPTH_PIXELS))))
    g = grid[::step, ::step]
    if g.ndim != 2 or not high > low:
        return float("nan")
    with np.errstate(invalid="ignore"):
        mask = np.nan_to_num(g, nan=low) > low + 0.1 * (high - low)
    mask = _fill_holes(mask) & np.isfinite(g)
    if mask.sum() < 64:
        return float("nan")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    values = g[mask]
    bright = mask & (g > np.median(values))
    if bright.sum() < 32:
        return float("nan")
    d, v = depth[bright], g[bright]
    if d.min() == d.max() or v.min() == v.max():
        return 0.0
    return float(stats.spearmanr(d, v)[0])


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (4-connected background) in one labelling pass: the
    background parts that do not reach the border are holes."""
    from scipy import ndimage

    background, _ = ndimage.label(~mask)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.unique(edge[edge > 0])
    return ~np.isin(background, outside)


def _float(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return f if np.isfinite(f) and f > 0 else float("nan")


def _mean_spacing(value: Any) -> float:
    """The mean of a spacing value given as ``"0.5\\0.5"``, a sequence or a number (NaN if none)."""
    if value is None:
        return float("nan")
    if isinstance(value, str):
        parts: list[Any] = value.split("\\")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = [value]
    numbers = [_float(p) for p in parts]
    numbers = [n for n in numbers if np.isfinite(n)]
    return float(np.mean(numbers)) if numbers else float("nan")


def header_geometry(fmt: str, num_images: int, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Geometry of one file from its header: catalog columns ``frames, pixel_spacing,
    slice_thickness, bits_stored, samples``.

    Args:
        fmt: The reader's format name (only to know where each reader keeps its values; the
            format itself is never a feature): DICOM tags; NIfTI/NRRD/MetaImage ``zooms``,
            ``slice_axis`` and ``dtype``; raster ``mode``.
        num_images: 2D images in the file (frames of a DICOM, slices of a volume).
        extra: The reader's :attr:`~hypermodal.io.FileHeader.extra`.
    """
    spacing = thickness = float("nan")
    bits: float = float("nan")
    samples = 1
    if fmt == "dicom":
        spacing = _mean_spacing(extra.get("pixel_spacing"))
        thickness = _float(extra.get("slice_thickness"))
        bits = _float(extra.get("bits_stored"))
        samples = int(extra.get("samples_per_pixel") or 1)
    elif fmt in ("nifti", "nrrd", "mha"):
        zooms = [_float(z) for z in (extra.get("zooms") or [])]
        if fmt == "nifti":
            zooms = zooms[:3]  # a fourth zoom is the time step
        axis = extra.get("slice_axis")
        in_plane = [z for i, z in enumerate(zooms) if i != axis and np.isfinite(z)][:2]
        spacing = _mean_spacing(in_plane)
        if isinstance(axis, int) and 0 <= axis < len(zooms):
            thickness = zooms[axis]
        dtype = str(extra.get("dtype") or "")
        try:
            bits = _float(np.dtype(dtype).itemsize * 8) if dtype else float("nan")
        except TypeError:
            bits = float("nan")
    elif fmt == "raster":
        mode = str(extra.get("mode") or "")
        bits = 16.0 if mode.startswith("I;16") or mode == "I" else 8.0
        samples = 3 if mode in ("RGB", "RGBA", "YCbCr", "P", "CMYK", "LAB", "HSV") else 1
    return {
        "frames": int(num_images),
        "pixel_spacing": spacing,
        "slice_thickness": thickness,
        "bits_stored": bits,
        "samples": samples,
    }


def _column(table: Any, name: str, n: int) -> np.ndarray:
    if name in getattr(table, "columns", ()):
        return np.asarray(table[name], dtype=np.float64)
    return np.full(n, np.nan)


def images_in_series(table: Any) -> np.ndarray:
    """Images per series for each row (a series: ``series``, else ``path``), at least the
    file's own ``frames``."""
    key = table["series"].fillna(table["path"]) if "series" in table.columns else table["path"]
    counts = key.map(key.value_counts()).to_numpy(dtype=np.float64)
    frames = _column(table, "frames", len(table))
    return np.fmax(counts, frames)


def feature_matrix(stats: np.ndarray, table: Any) -> np.ndarray:
    """The :data:`FEATURE_NAMES` matrix: ``stats`` (rows × :data:`STAT_NAMES`) beside the
    geometry columns of ``table`` (a catalog-like DataFrame, one row per image)."""
    n = len(table)
    stats = np.asarray(stats, dtype=np.float64).reshape(n, len(STAT_NAMES))
    rows = _column(table, "rows", n)
    cols = _column(table, "columns", n)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.abs(np.log(rows / cols))
    geometry = np.column_stack(
        [
            rows,
            cols,
            aspect,
            _column(table, "frames", n),
            _column(table, "pixel_spacing", n),
            _column(table, "slice_thickness", n),
            _column(table, "bits_stored", n),
            _column(table, "samples", n),
            images_in_series(table) if n else np.zeros(0),
        ]
    )
    return np.hstack([stats, geometry]).astype(np.float32)


#: Per-series features: the median, 10th and 90th percentile over the series' images of every
#: image feature (for a single image the three are equal).
SERIES_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{stat}_{name}" for stat in ("median", "p10", "p90") for name in FEATURE_NAMES
)


def series_keys(table: Any) -> np.ndarray:
    """The series of each row: ``series``, else the file ``path``."""
    if "series" in table.columns:
        return table["series"].fillna(table["path"]).astype(str).to_numpy()
    return table["path"].astype(str).to_numpy()


def series_matrix(x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The :data:`SERIES_FEATURE_NAMES` of each row's series (rows × 3·features): what the whole
    volume says, given to each of its images (NaN-aware: a feature missing on every image of
    the series stays NaN)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full((len(x), 3 * x.shape[1] if x.ndim == 2 else 0), np.nan, dtype=np.float32)
    if not len(x):
        return out
    _, inverse = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    import warnings

    for rows in np.split(order, bounds):
        block = x[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            q = np.nanpercentile(block, [50, 10, 90], axis=0)
        out[rows] = q.reshape(1, -1)
    return out
