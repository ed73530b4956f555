"""Safe extraction of the zip archives a server sends (TCIA's ``getImage``).

Every member name is checked before anything is written, members land under generated flat
names, and sizes are counted while decompressing (zip bombs), within :class:`ZipLimits`.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from hypermodal.sources.fetch.base import CHUNK, FetchError, UnsafeArchiveError, ZipLimits

__all__ = ["ZipLimits", "safe_extract_zip"]


def _unsafe_member(name: str) -> str | None:
    if not name or "\0" in name:
        return "empty name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "parent-folder component"
    return None


def _check_members(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """Refuse the archive if it has too many members or one member is unsafe."""
    if len(infos) > limits.max_members:
        raise UnsafeArchiveError(f"{len(infos)} members > limit {limits.max_members}")
    for info in infos:
        why = _unsafe_member(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip says nothing
        if why is None and kind == stat.S_IFLNK:
            why = "symbolic link"
        elif why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            why = "special file"
        if why:
            raise UnsafeArchiveError(f"zip member {info.filename!r}: {why}")


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: ZipLimits, total: int
) -> int:
    """Write one member to ``target`` within the limits; return the new running total."""
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                total += len(chunk)
                if written > limits.max_member_bytes or total > limits.max_total_bytes:
                    raise UnsafeArchiveError(f"{info.filename!r}: over the size limit")
                if written > 1 << 20 and written > limits.max_ratio * max(info.compress_size, 1):
                    raise UnsafeArchiveError(f"{info.filename!r}: compression ratio")
                dst.write(chunk)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise FetchError(f"zip member {info.filename!r} is damaged: {exc}") from exc
    return total


def safe_extract_zip(
    archive: Path,
    dest: Path,
    limits: ZipLimits | None = None,
    keep: Callable[[str], bool] | None = None,
) -> dict[str, Path]:
    """Extract ``archive`` into ``dest`` safely; return ``{member name: extracted path}``.

    Every member name is checked (no absolute paths, no ``..``, no symlinks or special files)
    and the whole archive is refused with :class:`UnsafeArchiveError` if one fails; members are
    written to generated flat names (``m000000``…) so nothing can land outside ``dest`` even if a
    check were missed. Sizes are counted while decompressing, not trusted from the header.
    ``keep(name)`` may skip members (they are still checked). An archive that cannot be read is a
    (retryable) :class:`FetchError`.
    """
    limits = limits or ZipLimits()
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{archive.name}: not a readable zip ({exc})") from exc
    with zf:
        infos = zf.infolist()
        _check_members(infos, limits)
        for i, info in enumerate(infos):
            if info.is_dir() or (keep is not None and not keep(info.filename)):
                continue
            if info.filename in out:
                raise UnsafeArchiveError(f"zip member {info.filename!r} appears twice")
            target = dest / f"m{i:06d}"
            total = _extract_member(zf, info, target, limits, total)
            out[info.filename] = target
    return out
