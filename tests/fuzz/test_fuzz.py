"""The fuzz slice: catalog, store and predict over seeded mutants of the real test files.

The corpus: :data:`N_MUTANTS` mutants of seed :data:`SEED` (byte flips, truncations, field
mutations of every codec and format), every file of the issue's list, and the special files
(FIFO, socket, device link, link loops, names that are not UTF-8, sparse giants). Each stage
runs as the real CLI in its own session, watched: it must exit 0 within its time limit, no
process may go above :data:`~tests.fuzz.stages.PROCESS_BOUND_MB`, no worker may outlive it, a
successful run prints no traceback, and every input is a row/result or an error with a reason
(counts reconcile). ``HYPERMODAL_FUZZ_SEED`` and ``HYPERMODAL_FUZZ_N`` change the slice,
``HYPERMODAL_FUZZ_TIMEOUT`` the time limit of each stage (seconds); ``mutants.jsonl`` beside the
corpus says how each file was made.

The fast tests check the generator, the special files and the watchdog themselves.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.fuzz.accounting import expected_inputs, match, path_keys
from tests.fuzz.bases import load_bases
from tests.fuzz.mutants import make_mutant, nifti_get, write_manifest, write_mutants
from tests.fuzz.specials import NOT_UTF8, write_issue_mutants, write_specials
from tests.fuzz.stages import Limits, StageResult, run_catalog, run_predict, run_store
from tests.fuzz.watch import run_watched

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("HYPERMODAL_FUZZ_SEED", "10"))
N_MUTANTS = int(os.environ.get("HYPERMODAL_FUZZ_N", "360"))
LIMITS = Limits(timeout_s=float(os.environ.get("HYPERMODAL_FUZZ_TIMEOUT", "240")))


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------- the generator
def test_generator_is_deterministic_and_covers_every_base(tmp_path):
    a = write_mutants(tmp_path / "a", SEED, 0, 72)
    b = write_mutants(tmp_path / "b", SEED, 0, 72)
    write_mutants(tmp_path / "c", SEED + 1, 0, 72)
    assert a == b and _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    assert {m.base for m in a} == {base.name for base in load_bases()}
    families = Counter(m.mutation.split()[0].rstrip(":") for m in a)
    assert {"flip", "truncate", "field"} <= set(families), families
    # mutant i depends on (seed, i) alone: the benchmark's finds are reproduced one by one
    _, data, how = make_mutant(SEED, 40)
    assert (tmp_path / "a" / a[40].rel).read_bytes() == data and a[40].mutation == how


def test_structure_mutations_say_what_they_did(tmp_path):
    import pydicom
    from PIL import Image

    root = tmp_path / "corpus"
    made = {Path(s.rel).name: root / s.rel for s in write_issue_mutants(root)}
    jls = pydicom.dcmread(made["issue-jls-rows-4096.dcm"], stop_before_pixels=True)
    assert (jls.Rows, jls.Columns) == (4096, 4096)
    assert jls.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    frames = pydicom.dcmread(made["issue-rle-frames-1000000.dcm"], stop_before_pixels=True)
    assert int(frames.NumberOfFrames) == 1_000_000
    assert made["issue-rle-frames-1000000.dcm"].stat().st_size < 10_000
    j2k = made["issue-j2k-siz-16.7M-rows.dcm"].read_bytes()
    siz = j2k.find(b"\xff\x4f\xff\x51")
    assert int.from_bytes(j2k[siz + 12 : siz + 16], "big") == 16_777_215
    assert pydicom.dcmread(made["issue-j2k-siz-16.7M-rows.dcm"]).Rows == 512
    nifti = made["issue-nifti2-dim-2^40.nii"].read_bytes()
    assert nifti_get(nifti, "dim", 1) == 2**40
    png = made["issue-png-ihdr-100000.png"].read_bytes()
    assert png[12:24] == b"IHDR" + (100_000).to_bytes(4, "big") * 2
    assert zlib.crc32(png[12:29]) == int.from_bytes(png[29:33], "big")  # a consistent lie
    with pytest.raises(Image.DecompressionBombError):
        Image.open(made["issue-png-ihdr-100000.png"])


def test_special_files_are_what_they_claim(tmp_path):
    import nibabel as nib

    root, outside = tmp_path / "corpus", tmp_path / "outside"
    specials = {s.rel: root / s.rel for s in write_specials(root, outside)}
    specials.update({s.rel: root / s.rel for s in write_issue_mutants(root)})
    mode = {rel: os.lstat(p).st_mode for rel, p in specials.items()}
    assert stat.S_ISFIFO(mode["special/pipe.dcm"])
    assert "special/socket.dcm" not in mode or stat.S_ISSOCK(mode["special/socket.dcm"])
    assert stat.S_ISCHR(os.stat(specials["special/device.dcm"]).st_mode)
    for rel in ("special/dangling.dcm", "special/selfloop.dcm"):
        with pytest.raises(OSError):
            os.stat(specials[rel])
    assert os.path.realpath(specials["special/loop"]) == str((root / "special").resolve())
    assert os.fsencode(NOT_UTF8).endswith(b"\xff\xfe")
    sparse = specials["special/sparse-tail.dcm"].stat()
    assert sparse.st_size == 2 << 30 and sparse.st_blocks * 512 < 1 << 20
    big = nib.load(specials["nifti/issue-axis-first.nii.gz"])
    assert big.shape == (160, 2000, 2000) and nib.aff2axcodes(big.affine)[0] == "S"
    assert specials["nifti/issue-axis-first.nii.gz"].stat().st_size < 8 << 20
    # the walk the stages must do: every non-folder entry, dot names and linked folders in,
    # the loop allowed but not required
    inputs = expected_inputs([root])
    names = {os.fsdecode(p).removeprefix(str(root) + "/") for p in inputs.must}
    assert {"special/pipe.dcm", "special/device.dcm", "special/.hidden.dcm"} <= names
    assert {"special/linked/ct.dcm", "special/selfloop.dcm", f"dicom/{NOT_UTF8}.dcm"} <= names
    assert {os.fsdecode(p).removeprefix(str(root) + "/") for p in inputs.may} == {"special/loop"}


def test_paths_are_matched_however_a_stage_carries_a_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "corpus"
    write_specials(root, tmp_path / "outside")
    inputs = expected_inputs([root])
    bad = os.fsencode(root / f"dicom/{NOT_UTF8}.dcm")
    as_text = bad.decode("utf-8", "surrogateescape")
    forms = [as_text, bad.decode("utf-8", "backslashreplace"), bad]
    forms.append(str(root / "dicom") + "/name-%FF%FE.dcm")
    for form in forms:
        assert bad in {p for p in inputs.must if path_keys(form) & inputs.must[p]}, form
    assert not path_keys(bad.decode("utf-8", "replace")) & inputs.must[bad]  # lossy: no match
    linked = str((tmp_path / "outside" / "ct.dcm").resolve())  # a stage that resolved the link
    missing, strangers = match(inputs, [linked])
    assert os.fsencode(root / "special/linked/ct.dcm") not in missing and not strangers


def test_watchdog_measures_memory_times_out_and_finds_orphans():
    grow = (
        "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(.3)"
    )
    out = run_watched([sys.executable, "-c", grow], timeout_s=30, cap_mb=4096, grace_s=0.5)
    assert out.rc == 0 and out.peak_main_mb > 290 and not out.timed_out
    out = run_watched([sys.executable, "-c", "import time; time.sleep(60)"], 1, 4096, grace_s=0.5)
    assert out.timed_out and out.rc == -9 and out.seconds < 10
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
    orphan = f"import subprocess, sys; subprocess.Popen({sleeper})"
    out = run_watched([sys.executable, "-c", orphan], timeout_s=30, cap_mb=4096, grace_s=0.5)
    assert out.rc == 0 and len(out.survivors) == 1  # recorded, then killed


# ------------------------------------------------------------------------- the fuzz slice
@pytest.fixture(scope="module")
def fuzz_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(work folder, corpus root) with the mutants, the issue's files and the special files."""
    work = tmp_path_factory.mktemp("fuzz")
    root = work / "corpus"
    mutants = write_mutants(root, SEED, 0, N_MUTANTS)
    write_manifest(work / "mutants.jsonl", mutants)
    write_specials(root, work / "outside", scale="ci")
    write_issue_mutants(root, scale="ci")
    return work, root


@pytest.fixture(scope="module")
def fuzz_catalog(fuzz_corpus) -> StageResult:
    work, root = fuzz_corpus
    return run_catalog([root], work / "catalog.parquet", LIMITS)


def _assert_clean(result: StageResult, work: Path) -> None:
    if result.problems:
        pytest.fail(
            f"{result.report()}\n(seed {SEED}; how each file was made: {work / 'mutants.jsonl'})",
            pytrace=False,
        )


@pytest.mark.slow
def test_catalog_accounts_for_every_mutant(fuzz_corpus, fuzz_catalog):
    _assert_clean(fuzz_catalog, fuzz_corpus[0])


@pytest.mark.slow
def test_store_accounts_for_every_catalogued_image(fuzz_corpus, fuzz_catalog):
    work, _ = fuzz_corpus
    _assert_clean(run_store(work / "catalog.parquet", work, LIMITS), work)


@pytest.mark.slow
def test_predict_accounts_for_every_mutant(fuzz_corpus, tiny_checkpoint):
    work, root = fuzz_corpus
    _assert_clean(run_predict([root], tiny_checkpoint, work / "predict.csv", LIMITS), work)
