"""The files ``predict`` classifies: those named, and every file under the folders named."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from hypermodal.catalog import SKIP_NAMES
from hypermodal.common.paths import local_path, path_text
from hypermodal.io.inputs import FolderKey, walk_files

log = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[Path | str], skip: Iterable[Path | str] = ()) -> list[Path]:
    """Files named directly, plus every file under named folders, in a stable order.

    Folders are listed by :func:`~hypermodal.io.inputs.walk_files`: a folder's files by name,
    then its sub-folders; links to folders are followed once (a second way into a folder, such
    as a link loop, is not listed again); nothing is opened. Every file found is an input, a
    hidden name included, and is either predicted or skipped with its reason: FIFOs, sockets,
    devices and broken links are refused by the reader without being opened. Only a corpus
    folder's metadata files (``dataset.json`` …) are left out, and a folder that cannot be
    listed is logged. Paths come back as :func:`~hypermodal.common.paths.path_text`, the text
    every output can hold (a name that is not UTF-8 included); the readers open them as such.

    Files in the folders ``skip`` (say, where a sort puts its links) are not inputs.

    Raises:
        FileNotFoundError: An input does not exist.
    """
    files: list[Path] = []
    skipped = tuple(os.path.join(os.path.realpath(local_path(s)), "") for s in skip)
    seen: dict[FolderKey, Path] = {}
    for item in inputs:
        p = local_path(item)  # a path as the file system has it, or as an output wrote it
        if not os.path.lexists(p):
            raise FileNotFoundError(f"input {path_text(p)} does not exist")
        if not p.is_dir():
            files.append(Path(path_text(p)))
            continue
        for entry in walk_files(p, SKIP_NAMES, seen):
            if entry.unlisted:
                log.warning("%s: %s: its files are not predicted", entry.path, entry.unlisted)
            elif not entry.repeated:
                files.append(Path(path_text(entry.path)))
    if skipped:
        files = [f for f in files if not _inside(f, skipped)]
    return files


def _inside(path: Path, folders: tuple[str, ...]) -> bool:
    """Whether ``path``'s folder (links resolved; the file itself may be a link) is in one of
    ``folders``."""
    parent = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(local_path(path)))), "")
    return parent.startswith(folders)
