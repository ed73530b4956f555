"""Only regular files are read: FIFOs, sockets and devices are refused without being opened, and
a file whose name is not valid UTF-8 is read through the text form every output writes."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypermodal.common.paths import from_text, local_path, path_text
from hypermodal.io import CorruptFileError, UnsupportedFileError, iter_images, read_header
from hypermodal.io.dicom import DicomReader
from hypermodal.io.inputs import walk_files
from hypermodal.io.metaimage import MetaImageReader
from hypermodal.io.nifti import NiftiReader
from hypermodal.io.nrrd import NrrdReader
from hypermodal.io.raster import RasterReader
from tests.helpers import copy_as, nibabel_file, pydicom_file


def returns_within(fn: Callable[[], Any], fifo: Path | None = None, seconds: float = 5.0) -> Any:
    """``fn()`` run in a thread that must finish within ``seconds`` (a FIFO opened for reading
    blocks until a writer comes: one is then opened, so that the test fails instead of hanging)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds} s: the FIFO was opened")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def special(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A FIFO, a socket, a link to a device that never ends, a broken link, a folder."""
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.dcm"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    device = tmp_path / "zero.nii"
    device.symlink_to("/dev/zero")
    broken = tmp_path / "gone.dcm"
    broken.symlink_to(tmp_path / "nowhere.dcm")
    folder = tmp_path / "folder.dcm"
    folder.mkdir()
    try:
        yield {"fifo": fifo, "socket": sock_path, "device": device, "broken": broken, "dir": folder}
    finally:
        sock.close()


@pytest.mark.parametrize(
    "kind, error, reason",
    [
        ("fifo", UnsupportedFileError, "a FIFO \\(named pipe\\), not a regular file: not opened"),
        ("socket", UnsupportedFileError, "a socket, not a regular file"),
        ("device", UnsupportedFileError, "a character device, not a regular file"),
        ("broken", CorruptFileError, "cannot read file \\(No such file or directory\\)"),
        ("dir", UnsupportedFileError, "a directory, not a file"),
    ],
)
def test_special_files_are_refused_without_opening(
    special: dict[str, Path], kind: str, error: type, reason: str
) -> None:
    path = special[kind]
    fifo = special["fifo"]
    with pytest.raises(error, match=reason):
        returns_within(lambda: read_header(path), fifo)
    with pytest.raises(error, match=reason):
        returns_within(lambda: list(iter_images(path)), fifo)


@pytest.mark.parametrize(
    "reader", [DicomReader(), NiftiReader(), RasterReader(), NrrdReader(), MetaImageReader()]
)
def test_every_reader_refuses_a_fifo_named_directly(special: dict[str, Path], reader: Any) -> None:
    fifo = special["fifo"]
    with pytest.raises(UnsupportedFileError, match="FIFO"):
        returns_within(lambda: reader.header(fifo), fifo)
    with pytest.raises(UnsupportedFileError, match="FIFO"):
        returns_within(lambda: list(reader.images(fifo)), fifo)


# --- names that are not valid UTF-8 ---------------------------------------------------------


def test_path_text_round_trip() -> None:
    raw = os.fsdecode(b"/data/scan-\xff\xfe-\xc3\xa9.dcm")  # two stray bytes, then a real é
    text = path_text(raw)
    assert text == "/data/scan-\\xff\\xfe-é.dcm"
    text.encode("utf-8")  # any UTF-8 output can hold it
    assert from_text(text) == raw and os.fsencode(from_text(text)) == os.fsencode(raw)
    assert path_text("/data/plain-é.dcm") == "/data/plain-é.dcm"  # valid UTF-8: unchanged
    assert path_text(b"/x/\x80") == "/x/\\x80"
    assert from_text("C:\\xray\\a.dcm") == "C:\\xray\\a.dcm"  # \xr is no escape


def test_a_file_named_with_stray_bytes_is_read_by_its_text(tmp_path: Path) -> None:
    raw = os.fsdecode(os.fsencode(tmp_path) + b"/ct-\xff.dcm")
    copy_as(pydicom_file("CT_small.dcm"), Path(raw))
    text = path_text(raw)
    assert not os.path.exists(text) and local_path(text) == Path(raw)
    header = read_header(text)
    assert header.path == text and header.modality == "CT"
    assert [i for i, _ in iter_images(text)] == [0]
    assert read_header(raw).path == text  # given the raw name: the same text comes back
    broken = Path(os.fsdecode(os.fsencode(tmp_path) + b"/bad-\xfe.dcm"))
    broken.write_bytes(b"not an image")
    with pytest.raises(UnsupportedFileError) as info:
        read_header(broken)
    assert info.value.path == path_text(broken)
    str(info.value).encode("utf-8")  # the message prints anywhere


def test_a_literal_backslash_name_wins_over_its_escape(tmp_path: Path) -> None:
    literal = tmp_path / "a\\xff.dcm"  # the characters backslash, x, f, f
    copy_as(pydicom_file("CT_small.dcm"), literal)
    assert local_path(str(literal)) == literal
    assert read_header(literal).modality == "CT"


# --- listing ---------------------------------------------------------------------------------


def test_walk_follows_folder_links_once_and_opens_nothing(
    tmp_path: Path, special: dict[str, Path]
) -> None:
    root = tmp_path / "root"
    (root / "a" / "deep").mkdir(parents=True)
    shutil.copy(nibabel_file("anatomical.nii"), root / "a" / "deep" / "brain.nii")
    (root / "a" / ".hidden").write_bytes(b"x")
    (root / "b").symlink_to(root / "a")  # a second way into a
    (root / "a" / "deep" / "up").symlink_to(root)  # a loop
    (root / "c").symlink_to(special["fifo"].parent / "folder.dcm")  # a link to an empty folder
    (root / "pipe").symlink_to(special["fifo"])
    entries = returns_within(lambda: list(walk_files(root)), special["fifo"])
    got = {e.path.relative_to(root).as_posix(): e for e in entries}
    assert set(got) == {"pipe", "a/.hidden", "a/deep/brain.nii", "a/deep/up", "b"}
    assert got["a/.hidden"].hidden and not got["a/deep/brain.nii"].hidden
    assert got["b"].repeated == f"link to a folder already listed as {root / 'a'}"
    assert got["a/deep/up"].repeated == f"link to a folder already listed as {root}"
    assert got["pipe"].repeated is None and got["pipe"].unlisted is None
