"""Peak memory of ``predict`` is flat in the number of files: per-file rows only, no images.

Each size runs ``predict`` (the bundled default model, the default sampling) in a fresh Python
process on tiny synthetic DICOM files (:mod:`hypermodal.sources.synthetic_tiny`, series of
100) and reports the peak RSS of that main process. Ten times the files may cost a few KB per
file (the header pass keeps one small record per file), never a decoded image per file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hypermodal.sources.synthetic_tiny import write_tiny_dicom

#: peak RSS may grow by less than this share from SMALL to LARGE files
GROWTH_BOUND = 0.25
#: and by less than this many KB per extra file
PER_FILE_KB = 4.0
SMALL, LARGE = 2_000, 20_000

CHILD = """
import json, resource, sys, tempfile
from pathlib import Path

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def main():
    from hypermodal.inference import load_model, predict
    from hypermodal.default_model import MODEL_PATH

    load_model(MODEL_PATH)
    floor = peak_mb()
    with tempfile.TemporaryDirectory() as tmp:
        s = predict([Path(sys.argv[1])], None, Path(tmp) / "series.parquet", progress=False,
                    workers=2)
    print(json.dumps({"files": s.files_seen, "series": s.series, "images": s.images,
                      "floor_mb": floor, "peak_mb": peak_mb()}))

if __name__ == "__main__":
    main()
"""


def _peak(folder: Path, script: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(script), str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_of_predict_is_flat_in_the_number_of_files(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    runs = {}
    for n in (SMALL, LARGE):
        folder = tmp_path / f"tiny-{n}"
        assert write_tiny_dicom(folder, n, series_size=100) == n
        runs[n] = _peak(folder, script)
    small, large = runs[SMALL], runs[LARGE]
    # every file was seen and every series decided, from a sample of 8 of its 100 images
    assert (small["files"], small["series"], small["images"]) == (
        SMALL,
        SMALL // 100,
        SMALL // 100 * 8,
    )
    assert (large["files"], large["series"], large["images"]) == (
        LARGE,
        LARGE // 100,
        LARGE // 100 * 8,
    )
    growth = large["peak_mb"] / small["peak_mb"] - 1
    per_file_kb = (large["peak_mb"] - small["peak_mb"]) * 1024 / (LARGE - SMALL)
    detail = f"{small} -> {large}: {growth:+.1%}, {per_file_kb:.2f} KB per extra file"
    assert growth < GROWTH_BOUND, detail
    assert per_file_kb < PER_FILE_KB, detail
