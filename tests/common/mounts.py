"""Small disks for the output tests: a tmpfs of a given size, full or read-only.

Mounting needs the right to mount (root in a container); without it the test is skipped, except
for a read-only folder, which a user without that right gets from ``chmod``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (read-only when asked), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Write a filler file into ``folder`` until the disk is full, then free ``leave`` bytes."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nothing can be written into: a read-only tmpfs for root (whom permissions do
    not stop), a ``chmod 555`` folder for anyone else."""
    if os.geteuid() == 0:
        with tmpfs(path, "64k", read_only=True) as mounted:
            yield mounted
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
