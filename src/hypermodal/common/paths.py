"""File names as text in every output, including names that are not valid UTF-8.

A POSIX file name is bytes. Python gives a name that is not valid UTF-8 as a ``str`` holding
*surrogate escapes* (``os.fsdecode``: byte ``0xff`` becomes ``"\\udcff"``), which no UTF-8 output
can hold: Parquet, CSV and a terminal raise ``UnicodeEncodeError`` on it. So every stage writes
a path as :func:`path_text`:

* a name that is valid UTF-8 (nearly every name) is written unchanged;
* in a name that is not, each byte that does not decode is written as the four characters
  ``\\xNN`` (Python's ``backslashreplace``), e.g. ``scan-\\xff.dcm``. The text is valid UTF-8 and
  the same in every output (catalog, store manifest, errors files, predictions).

:func:`from_text` reverses it (``\\xNN`` with ``NN`` ≥ 80 back to the byte), and
:func:`local_path` gives the path to open for such a text — the text itself when a file of that
name exists, else the name with its escapes turned back into bytes — so the readers of
:mod:`hypermodal.io` open a catalog row of such a file as they open any other. A name holding
a literal backslash, ``x`` and two hex digits from ``80`` to ``ff`` *and* sitting beside the
same name with those bytes is ambiguous; the literal name wins.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["from_text", "local_path", "path_text"]

_ESCAPE = re.compile(r"\\x([89a-f][0-9a-f])")


def path_text(path: str | os.PathLike[str] | bytes) -> str:
    """A path as valid UTF-8 text: unchanged when it is, undecodable bytes as ``\\xNN``.

    Args:
        path: A path (``str`` from the file system, ``Path`` or ``bytes``).

    Returns:
        The text to write in outputs.
    """
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("ascii")


def from_text(text: str) -> str:
    """The file-system name a :func:`path_text` text stands for (surrogate escapes restored)."""
    return _ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def local_path(path: str | os.PathLike[str]) -> Path:
    """The path to open for ``path``, which may be a :func:`path_text` text.

    Args:
        path: A path as given, or as read back from an output.

    Returns:
        ``path`` itself, unless it holds ``\\xNN`` escapes, names nothing, and the name with
        the escapes turned back into bytes exists: then that name.
    """
    text = os.fspath(path)
    if "\\x" not in text or os.path.lexists(text):
        return Path(text)
    original = from_text(text)
    return Path(original) if original != text and os.path.lexists(original) else Path(text)
