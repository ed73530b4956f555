"""Progress bars that appear only where a person can see them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_enabled(requested: bool = True) -> bool:
    return requested and sys.stderr.isatty()


def progress(iterable: Iterable[T], enabled: bool = True, **kwargs: Any) -> Iterator[T]:
    """``tqdm`` when ``enabled`` and stderr is a terminal; the plain iterable otherwise."""
    if not progress_enabled(enabled):
        yield from iterable
        return
    yield from tqdm(iterable, dynamic_ncols=True, **kwargs)


def progress_bar(total: int, enabled: bool = True, **kwargs: Any) -> tqdm:
    return tqdm(total=total, disable=not progress_enabled(enabled), dynamic_ncols=True, **kwargs)
