"""Many tiny DICOM files, fast: the workload of memory-scaling tests (10⁴–10⁵ files).

:func:`write_tiny_dicom` serialises one small CT-like DICOM file (``side`` × ``side`` pixels,
uint16, a real header layout through pydicom) once, then writes every other file as a copy of
those bytes with its own PatientID, Study/Series/SOP Instance UIDs and InstanceNumber patched in
place (same lengths, so every file stays a valid DICOM file that pydicom reads). Writing is
bounded by the file system (tens of thousands of files a second), not by pydicom. Each series
gets a folder of its own: ``<out>/series_<k>/im_<i>.dcm``. The pixels carry no meaning: never
use these files for accuracy claims.

Example:
    >>> from hypermodal.sources.synthetic_tiny import write_tiny_dicom
    >>> write_tiny_dicom("/tmp/tiny", n=2000, series_size=100)  # doctest: +SKIP
    2000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: fixed-width placeholders, replaced per file (the widths allow 10⁸ series and files; a UID
#: component is 1 then 8 digits: no leading zero)
_ROOT = "1.2.826.0.1.3680043.8.498."
_PATIENT = "TINYPAT00000000"
_STUDY = _ROOT + "1.999999999"
_SERIES = _ROOT + "2.999999999"
_SOP = _ROOT + "3.999999999"
_INSTANCE = "999999"


def _template(side: int, seed: int) -> tuple[bytes, int]:
    """The bytes of one file with the placeholders, and where its header part ends."""
    from io import BytesIO

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = _SOP
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = _SOP
    ds.Modality = "CT"
    ds.PatientID = _PATIENT
    ds.PatientName = "Tiny^Synthetic"
    ds.StudyInstanceUID = _STUDY
    ds.SeriesInstanceUID = _SERIES
    ds.StudyDate = "20240101"
    ds.SeriesDescription = "tiny synthetic (memory tests only)"
    ds.InstanceNumber = _INSTANCE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = side
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = "2.5"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    pixels = np.random.default_rng(seed).integers(0, 2000, (side, side), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data, len(data) - pixels.nbytes


def write_tiny_dicom(
    out: Path | str, n: int, *, series_size: int = 100, side: int = 16, seed: int = 0
) -> int:
    """Write ``n`` tiny single-slice CT files under ``out``, ``series_size`` to a series.

    Args:
        out: The root folder (one sub-folder per series).
        n: Files to write (at most 10⁸).
        series_size: Files per series (a new patient and study every 4 series).
        side: Rows and columns of each image.
        seed: Fixes the pixels (every file has the same pixels).

    Returns:
        The number of files written.

    Raises:
        ValueError: ``n`` below 0 or above 10⁸, ``series_size`` or ``side`` below 1.
    """
    if not 0 <= n <= 10**8 or series_size < 1 or side < 1:
        raise ValueError("n must be in 0..10^8, series_size and side at least 1")
    data, header_end = _template(side, seed)
    head, pixels = data[:header_end], data[header_end:]
    for token in (_PATIENT, _STUDY, _SERIES, _SOP, _INSTANCE):
        if token.encode() not in head:  # pragma: no cover - the layout is pydicom's
            raise RuntimeError(f"placeholder {token} not found in the template header")
    out = Path(out)
    for i in range(n):
        series, within = divmod(i, series_size)
        folder = out / f"series_{series:06d}"
        if within == 0:
            folder.mkdir(parents=True, exist_ok=True)
        patched = (
            head.replace(_PATIENT.encode(), f"TINYPAT{series // 4:08d}".encode())
            .replace(_STUDY.encode(), f"{_ROOT}1.1{series // 4:08d}".encode())
            .replace(_SERIES.encode(), f"{_ROOT}2.1{series:08d}".encode())
            .replace(_SOP.encode(), f"{_ROOT}3.1{i:08d}".encode())
            .replace(_INSTANCE.encode(), f"{within + 1:06d}".encode())
        )
        path = folder / f"im_{within:06d}.dcm"
        tmp = path.with_name(path.name + ".tmp")  # renamed into place: never half a file
        tmp.write_bytes(patched + pixels)
        tmp.replace(path)
    return n
