"""One image, one copy: merge the files that hold the same image into clusters.

Re-encodings of the same image, within and across packages, are found by SOPInstanceUID, by
identical decoded pixels (hashed in native byte order, so big-endian copies match), and, for
lossy-compressed copies, by near-identical thumbnails
(:data:`~hypermodal.sources.samples.manifest.NEAR_IDENTICAL_CORRELATION`). Crops and
downsampled copies are named in the manifest (``derived``). One canonical file is kept
(uncompressed or lossless first), the others are listed as its re-encodings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from hypermodal.sources.samples.dicom import uid_name
from hypermodal.sources.samples.manifest import NEAR_IDENTICAL_CORRELATION, PACKAGE_ORDER
from hypermodal.sources.samples.records import Image

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: ``package:path`` of a derived copy -> (``package:path`` of its original, evidence).
Derived = dict[str, tuple[str, str]]


class UnionFind:
    """Disjoint sets over ``0..n-1``; a set's root is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        """The root of ``i``'s set."""
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        """Merge the sets of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        """Every set, sorted, in the order of their smallest members."""
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return [sorted(v) for _, v in sorted(out.items())]


def file_rank(img: Image) -> tuple[Any, ...]:
    """Sort key of files holding the same image: the first is kept."""
    return (
        img.lossy,
        img.forced,
        img.unpacked is not None,
        img.compressed,
        img.transfer_syntax == _BIG_ENDIAN,
        img.transfer_syntax != _EXPLICIT_LE,
        PACKAGE_ORDER.get(img.package, 99),
        img.source_path,
    )


def _thumb_corr(a: Image, b: Image) -> float:
    if a.thumb is None or b.thumb is None:
        return 0.0
    return float(np.mean(a.thumb * b.thumb))


def _same_geometry(a: Image, b: Image) -> bool:
    if a.images != b.images or a.extra.get("samples_per_pixel") != b.extra.get("samples_per_pixel"):
        return False
    ra, rb = a.rows / a.columns, b.rows / b.columns
    return abs(ra - rb) <= 0.01 * ra


@dataclass
class Cluster:
    """Files holding one image: the canonical file plus its re-encodings."""

    canonical: Image
    others: list[Image]
    evidence: dict[str, str]  #: why each other file holds the same image, by its key


def _merge_near_copies(images: list[Image], uf: UnionFind) -> None:
    """Union lossy near-copies: one representative per exact group, at least one side lossy."""
    exact = uf.groups()
    reps = [min(g, key=lambda i: file_rank(images[i])) for g in exact]
    lossy = [any(images[i].lossy for i in g) for g in exact]
    for a in range(len(exact)):
        for b in range(a + 1, len(exact)):
            ia, ib = reps[a], reps[b]
            if not (lossy[a] or lossy[b]) or not _same_geometry(images[ia], images[ib]):
                continue
            if _thumb_corr(images[ia], images[ib]) >= NEAR_IDENTICAL_CORRELATION:
                uf.union(ia, ib)


def cluster_images(images: list[Image], derived: Derived) -> list[Cluster]:
    """Merge the files that hold the same image (SOP, pixels, lossy near-copies, derived)."""
    uf = UnionFind(len(images))
    by_key = {img.key: i for i, img in enumerate(images)}
    for attr in ("sop", "pixel_sha256"):
        first: dict[str, int] = {}
        for i, img in enumerate(images):
            value = getattr(img, attr)
            if value:
                uf.union(first.setdefault(value, i), i)
    _merge_near_copies(images, uf)
    for path, (of, _) in derived.items():
        if path in by_key and of in by_key:
            uf.union(by_key[path], by_key[of])

    clusters = []
    for group in uf.groups():
        # Prefer a pixel group with no lossy member (693_UNCI is the decoded lossy 693_J2KI,
        # uncompressed but not the original), then the best file in it.
        pixel_groups: dict[str, list[int]] = defaultdict(list)
        for i in group:
            pixel_groups[images[i].pixel_sha256].append(i)
        best_group = min(
            pixel_groups.values(),
            key=lambda g: (
                any(images[i].lossy for i in g),
                any(images[i].key in derived for i in g),
                min(file_rank(images[i]) for i in g),
            ),
        )
        canonical = images[min(best_group, key=lambda i: file_rank(images[i]))]
        others = sorted(
            (images[i] for i in group if images[i] is not canonical), key=lambda m: m.key
        )
        evidence = {m.key: _evidence(m, canonical, derived) for m in others}
        clusters.append(Cluster(canonical, others, evidence))
    return clusters


def _evidence(img: Image, canonical: Image, derived: Derived) -> str:
    parts = []
    if img.sop and img.sop == canonical.sop:
        parts.append("same SOPInstanceUID")
    if img.pixel_sha256 == canonical.pixel_sha256:
        parts.append("identical decoded pixels")
    elif img.key in derived:
        parts.append(f"derived copy: {derived[img.key][1]}")
    elif img.thumb is not None and canonical.thumb is not None and _same_geometry(img, canonical):
        corr = _thumb_corr(img, canonical)
        kind = "lossy re-encoding" if (img.lossy or canonical.lossy) else "near-identical"
        parts.append(f"{kind}: thumbnail correlation {corr:.4f}")
    else:
        parts.append("same image through another re-encoding")
    if img.fmt == "dicom":
        syntax = uid_name(img.transfer_syntax)
        if img.unpacked:
            syntax += f", {img.unpacked}-compressed file"
        parts.append(syntax)
    return "; ".join(parts)
