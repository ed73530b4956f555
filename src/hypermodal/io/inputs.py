"""Listing the files under a folder: links followed once, nothing opened, every entry told.

:func:`walk_files` lists what a stage will read under a folder, in a stable order (a folder's
files by name, then its sub-folders by name):

* a link to a folder is followed like a folder, once: a folder reached a second time (a link
  loop, or two links to one folder) is not listed again; its link is an :class:`Entry` whose
  ``repeated`` says so, so it is in the accounting;
* nothing is opened or read, only looked up: FIFOs, sockets, devices and broken links are listed
  like files, and the readers refuse them with a reason without opening them
  (:func:`hypermodal.io.streams.check_regular`);
* a folder that cannot be listed is an :class:`Entry` whose ``unlisted`` says why;
* names in ``skip_names`` (exact names, or shell patterns such as ``.*.tmp``), files and folders
  alike, are not listed at all: a corpus folder's own metadata and what the program itself
  writes (a fetch's ``.fetch/`` journal and lock, temporary files; see
  :data:`hypermodal.catalog.SKIP_NAMES`) are never inputs;
* names starting with ``.`` (``.DS_Store``, ``.git/…``) are listed with ``hidden`` set, so a
  stage can count them as it chooses (the catalog counts them as excluded, by path).

Paths are as the file system gives them (a name that is not valid UTF-8 holds surrogate
escapes); :func:`hypermodal.common.paths.path_text` turns them into the text written to outputs.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "FolderKey", "claim_folder", "name_matcher", "walk_files"]


#: a folder's identity (device, inode): the same folder reached through a link has the same key
FolderKey = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """One entry under a folder.

    Attributes:
        path: Its path.
        hidden: Its name, or the name of a folder above it (below the folder walked), starts
            with ``.``.
        repeated: For a folder reached a second time (a link loop, two links to one folder):
            what it repeats; it is not listed again.
        unlisted: For a folder that cannot be listed: why.
    """

    path: Path
    hidden: bool = False
    repeated: str | None = None
    unlisted: str | None = None


def name_matcher(names: Collection[str]) -> Callable[[str], bool]:
    """A test of whether a name is one of ``names``: exact names, or shell patterns (``*``,
    ``?``, ``[...]``) matched against the whole name, case-sensitively.

    Example:
        >>> skip = name_matcher({"dataset.json", ".*.tmp"})
        >>> skip(".catalog.parquet.123.ab_c.tmp"), skip("scan.dcm")
        (True, False)
    """
    exact = frozenset(n for n in names if not any(c in n for c in "*?["))
    patterns = [n for n in names if n not in exact]
    rx = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None

    def matches(name: str) -> bool:
        return name in exact or (rx is not None and rx.match(name) is not None)

    return matches


def claim_folder(seen: dict[FolderKey, Path], folder: Path) -> str | None:
    """Claim ``folder`` for listing; what it repeats when another path claimed it first.

    Args:
        seen: The folders claimed so far (shared by every walk of one listing).
        folder: The folder.

    Returns:
        None when ``folder`` is claimed now (or was, by the same path, or cannot be looked up:
        the walk then says why); else a reason naming the folder listed first.
    """
    try:
        st = os.stat(folder)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino)
    first = seen.setdefault(key, folder)
    if first == folder:
        return None
    what = "link to a folder" if os.path.islink(folder) else "folder"
    return f"{what} already listed as {first}"


def walk_files(
    folder: Path | str,
    skip_names: Collection[str] = (),
    seen: dict[FolderKey, Path] | None = None,
    hidden: bool = False,
) -> Iterator[Entry]:
    """Every entry under ``folder`` (see the module doc), in a stable order.

    Args:
        folder: The folder to list.
        skip_names: Names of files and folders that are never inputs (a dataset's own
            ``dataset.json``, the program's ``.fetch/`` folder), exact or shell patterns
            (:func:`name_matcher`): not listed at all, nor entered.
        seen: Folders already claimed by other walks of the same listing
            (:func:`claim_folder`); updated.
        hidden: Treat every entry as hidden (the folder's own name starts with ``.``).

    Yields:
        One :class:`Entry` per file, special file, broken link, repeated folder or unlistable
        folder.
    """
    root = Path(folder)
    seen = {} if seen is None else seen
    repeated = claim_folder(seen, root)
    if repeated is not None:
        yield Entry(root, hidden, repeated=repeated)
        return
    yield from _walk(root, seen, name_matcher(skip_names), hidden)


def _walk(
    folder: Path, seen: dict[FolderKey, Path], skip: Callable[[str], bool], hidden: bool
) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Entry(folder, hidden, unlisted=f"cannot list folder ({exc.strerror or exc})")
        return
    folders: list[tuple[Path, bool, bool]] = []
    for entry in entries:
        if skip(entry.name):
            continue
        path = Path(entry.path)
        below_hidden = hidden or entry.name.startswith(".")
        try:
            is_dir = entry.is_dir()  # follows links; opens nothing
        except OSError:
            is_dir = False
        if is_dir:
            folders.append((path, below_hidden, entry.is_symlink()))
        else:  # files, FIFOs, devices, broken links: the reader decides
            yield Entry(path, below_hidden)
    # real sub-folders claim their place before links to them do
    claimed = []
    for path, below_hidden, _ in sorted(folders, key=lambda f: f[2]):
        repeated = claim_folder(seen, path)
        if repeated is not None:
            yield Entry(path, below_hidden, repeated=repeated)
        else:
            claimed.append(path)
    for path, below_hidden, _ in folders:
        if path in claimed:
            yield from _walk(path, seen, skip, below_hidden)
