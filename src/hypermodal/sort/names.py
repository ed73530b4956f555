"""Folder and file names made safe to create from header text.

Header values are free text written by scanners and people: they may hold ``/``, ``..``,
control characters, trailing dots or spaces, hundreds of characters, or nothing at all.
:func:`safe_name` turns any of them into one path component that stays where it is put.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

#: bytes (UTF-8) one name may take; file systems allow 255, room is left for a de-dup suffix
MAX_NAME_BYTES = 120
#: characters never kept in a name (path separators, and what Windows file systems refuse)
_FORBIDDEN = frozenset('/\\:*?"<>|')
_SPACES = re.compile(r"\s+")
#: suffixes kept whole when a name is shortened or de-duplicated
COMPOUND_SUFFIXES = (".nii.gz", ".dcm.gz", ".nrrd.gz", ".tar.gz")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _cap(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore").rstrip(" ._")


def split_suffix(name: str) -> tuple[str, str]:
    """``("scan", ".nii.gz")`` for ``scan.nii.gz``: the stem and the suffix kept on rename."""
    lower = name.lower()
    for suffix in COMPOUND_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > 12:
        return name, ""
    return name[:dot], name[dot:]


def safe_name(value: Any, fallback: str, limit: int = MAX_NAME_BYTES) -> str:
    """One path component from free text.

    Path separators and the characters Windows refuses become ``_``, control and unprintable
    characters (and undecodable bytes) become ``_``, runs of white space one space, leading and
    trailing dots, spaces and underscores go (so ``.`` and ``..`` cannot survive), and the
    result is capped at ``limit`` UTF-8 bytes, keeping a file's suffix.

    Args:
        value: The text (None or NaN: empty).
        fallback: What an empty result becomes (itself made safe).
        limit: The most bytes the name may take.

    Returns:
        A non-empty name without ``/`` that is neither ``.`` nor ``..``.

    Examples:
        >>> safe_name("../../etc/passwd", "unknown")
        'etc_passwd'
        >>> safe_name("  ", "unknown-patient")
        'unknown-patient'
    """
    text = unicodedata.normalize("NFC", _text(value))
    chars = []
    for ch in text:
        if ch.isspace():
            chars.append(" ")
        elif ch in _FORBIDDEN or not ch.isprintable():
            chars.append("_")
        else:
            chars.append(ch)
    text = _SPACES.sub(" ", "".join(chars)).strip("._ ")
    if not text:
        return safe_name(fallback, "unknown", limit) if fallback != value else "unknown"
    stem, suffix = split_suffix(text)
    if len(text.encode("utf-8")) > limit:
        room = max(1, limit - len(suffix.encode("utf-8")))
        text = (_cap(stem, room) or "_") + suffix
    return text


def numbered(name: str, n: int) -> str:
    """The ``n``-th alternative of a file name that is taken: ``scan_2.dcm``, ``scan_3.dcm``…"""
    stem, suffix = split_suffix(name)
    return f"{stem}_{n}{suffix}"
