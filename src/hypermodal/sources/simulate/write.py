"""Writers of the simulated images: single-frame DX/CR DICOM, PET DICOM series, NIfTI, PNG/JPEG.

Every file is written to a temporary name and renamed into place. Output bytes depend only on
the inputs: UIDs come from :func:`uid` (a name-based UUID of the seed and names), dates and
times from :class:`SeriesIds`, NIfTI is gzipped without a time stamp. Each DICOM file says in
``DerivationDescription`` that it is simulated and from which real dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from hypermodal.common.files import write_bytes_atomic, write_with
from hypermodal.sources.simulate.drr import MAX_STORED, DrrImage
from hypermodal.sources.simulate.export import encode_raster
from hypermodal.sources.simulate.pet import PetVolume

SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
}
F18_HALF_LIFE_S = 6586.2


#: namespace of the name-based UUIDs behind :func:`uid`
_UID_NAMESPACE = uuid.UUID("6f1d3c2a-8b4e-5a7d-9c0f-2e6b1a4d8c35")


def uid(*parts: object) -> str:
    """A UID ``2.25.<UUID as an integer>`` that depends only on ``parts`` (seed, names, numbers).

    The UUID is name-based (version 5) — ``pydicom.uid.generate_uid(prefix=None, ...)`` would
    ignore its entropy sources and return a random one.
    """
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class SeriesIds:
    """Identifiers of one simulated series (one patient, one study, one series)."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    frame_uid: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    series_number: int
    description: str
    provenance: str  # what DerivationDescription says

    @classmethod
    def make(
        cls,
        seed: int,
        dataset: str,
        volume: str,
        series: str,
        n: int,
        description: str,
        source: str,
    ) -> SeriesIds:
        """Identifiers for series ``series`` (number ``n``) of simulated dataset ``dataset``.

        Patient and study follow the source ``volume`` (every image simulated from one volume
        is one patient's study, as a split by patient needs); the series is its own.
        """
        rng = np.random.default_rng(hash_text(seed, dataset, volume))
        day = int(rng.integers(0, 3650))
        date = np.datetime64("2012-01-01") + np.timedelta64(day, "D")
        hms = int(rng.integers(7 * 3600, 19 * 3600))
        return cls(
            patient_id=f"SIM{hash_text(seed, dataset, volume) % 10**8:08d}",
            patient_name=f"SIMULATED^{dataset.split('.')[-1][:20].upper()}",
            study_uid=uid(seed, dataset, volume, "study"),
            series_uid=uid(seed, dataset, volume, series, "series"),
            frame_uid=uid(seed, dataset, volume, "frame"),
            study_date=str(date).replace("-", ""),
            study_time=f"{hms // 3600:02d}{hms // 60 % 60:02d}{hms % 60:02d}",
            series_number=n,
            description=description,
            provenance=f"simulated ({description}) from real dataset {source}; training only",
        )


def hash_text(*parts: object) -> int:
    """A stable integer hash of ``parts`` (Python's ``hash`` of strings changes per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _dataset(ids: SeriesIds, modality: str, instance: int, body_part: str | None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    ds.file_meta.MediaStorageSOPInstanceUID = uid(ids.series_uid, instance)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ids.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ids.study_time
    ds.AccessionNumber = ids.patient_id[-6:]
    ds.Modality = modality
    ds.Manufacturer = "SIMULATED"
    ds.SeriesDescription = ids.description
    ds.DerivationDescription = ids.provenance[:1024]
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    if body_part:
        ds.BodyPartExamined = str(body_part).upper()[:16]
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.FrameOfReferenceUID = ids.frame_uid
    ds.StudyID = ids.patient_id[-8:]
    ds.SeriesNumber = ids.series_number
    ds.InstanceNumber = instance
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.BitsAllocated = 16
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    write_with(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    return path


def write_radiograph(path: Path, image: DrrImage, ids: SeriesIds, body_part: str | None) -> Path:
    """One single-frame DX or CR file (12 bits stored, MONOCHROME1 or MONOCHROME2)."""
    p = image.params
    ds = _dataset(ids, p.modality, 1, body_part)
    if p.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = p.view if p.view in ("AP", "PA", "LL", "RL") else ""
    ds.PatientOrientation = ["P", "F"] if p.view in ("LL", "RL") else ["L", "F"]
    ds.KVP = f"{image.kvp:.1f}"
    sid = 1000.0 if p.view in ("AP", "PA", "OBL") else 1500.0
    ds.DistanceSourceToDetector = f"{sid:.1f}"
    ds.DistanceSourceToPatient = f"{sid / p.magnification:.1f}"
    ds.EstimatedRadiographicMagnificationFactor = f"{p.magnification:.4f}"
    spacing = [f"{image.pixel_mm:.4f}", f"{image.pixel_mm:.4f}"]
    ds.ImagerPixelSpacing = spacing
    ds.PixelSpacing = spacing
    ds.PhotometricInterpretation = p.photometric
    ds.Rows, ds.Columns = (int(x) for x in image.pixels.shape)
    ds.BitsStored = 12
    ds.HighBit = 11
    centre = (p.out_range[0] + p.out_range[1]) / 2
    ds.WindowCenter = f"{centre:.1f}"
    ds.WindowWidth = f"{max(p.out_range[1] - p.out_range[0], 1):.1f}"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "YES" if p.marker else "NO"
    pixels = np.clip(image.pixels, 0, MAX_STORED).astype("<u2")
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return _save(ds, path)


def _slice_image(values: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of RAS+ ``(x, y, z)`` as DICOM rows (anterior first) and columns
    (patient right first)."""
    return np.ascontiguousarray(values[::-1, ::-1, k].T)


def _radiopharmaceutical(pet: PetVolume, ids: SeriesIds) -> DicomSequence:
    item = Dataset()
    item.Radiopharmaceutical = "Fludeoxyglucose F^18^"
    hh, mm = int(ids.study_time[:2]) - 1, ids.study_time[2:4]
    item.RadiopharmaceuticalStartTime = f"{max(hh, 0):02d}{mm}00"
    item.RadionuclideTotalDose = f"{pet.params.dose_mbq * 1e6:.1f}"
    item.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    item.RadionuclidePositronFraction = "0.9673"
    return DicomSequence([item])


def write_pet_series(
    folder: Path, pet: PetVolume, ids: SeriesIds, body_part: str | None, per_slice_slope: bool
) -> list[Path]:
    """One PT file per axial slice: uint16 with RescaleSlope (Bq/ml), superior slice first."""
    values = pet.values
    m, _, nz = values.shape
    px, dz = pet.pixel_mm, pet.slice_mm
    top = float(np.max(values)) or 1.0
    paths = []
    for n, k in enumerate(range(nz - 1, -1, -1), start=1):
        img = _slice_image(values, k)
        slope = (float(img.max()) or 1.0) / 65535.0 if per_slice_slope else top / 65535.0
        stored = np.clip(np.rint(img / slope), 0, 65535).astype("<u2")
        ds = _dataset(ids, "PT", n, body_part)
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        p = pet.params
        ds.ReconstructionMethod = (
            f"OSEM {p.iterations}i{p.subsets}s" if p.recon == "OSEM" else "FBP HANN"
        )
        ds.ConvolutionKernel = f"GAUSSIAN {p.psf_fwhm_mm:.1f} MM"
        ds.PatientWeight = f"{p.weight_kg:.1f}"
        ds.RadiopharmaceuticalInformationSequence = _radiopharmaceutical(pet, ids)
        ds.NumberOfSlices = nz
        ds.ImageIndex = n
        ds.SliceThickness = f"{dz:.3f}"
        ds.PixelSpacing = [f"{px:.4f}", f"{px:.4f}"]
        half = (m - 1) / 2 * px
        z = (k - (nz - 1) / 2) * dz
        ds.ImagePositionPatient = [f"{-half:.3f}", f"{-half:.3f}", f"{z:.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.3f}"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = m
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = f"{slope:.8g}"
        ds.RescaleType = "BQML"
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        paths.append(_save(ds, folder / f"PT{n:04d}.dcm"))
    return paths


def write_pet_nifti(path: Path, pet: PetVolume, description: str) -> Path:
    """A float32 NIfTI-1 volume in Bq/ml (RAS+ affine, millimetres), gzipped without a time."""
    m, _, nz = pet.values.shape
    px, dz = pet.pixel_mm, pet.slice_mm
    affine = np.diag([px, px, dz, 1.0])
    affine[:3, 3] = [-(m - 1) / 2 * px, -(m - 1) / 2 * px, -(nz - 1) / 2 * dz]
    img = nib.Nifti1Image(pet.values.astype(np.float32), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header["descrip"] = description.encode()[:79]
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
    return path


def write_export(path: Path, img8: np.ndarray, fmt: str, quality: int) -> Path:
    """An exported PNG or JPEG file."""
    write_bytes_atomic(path, encode_raster(img8, fmt, quality))
    return path
