"""X-ray and PET training images simulated from real anatomy, and export-pipeline augmentation.

The bundled corpus has real CT and MR volumes but almost no radiographs and no PET. This
package makes them by physics-based simulation from the real volumes — radiographs as DRRs
(:mod:`~hypermodal.sources.simulate.drr`), PET by projection, Poisson counts and
reconstruction (:mod:`~hypermodal.sources.simulate.pet`) — and makes the 8-bit PNG/JPEG
exports people share from every real and simulated dataset
(:mod:`~hypermodal.sources.simulate.export`). MR volumes become a pseudo-CT by tissue classes
(:mod:`~hypermodal.sources.simulate.anatomy`).

:func:`simulate_corpus` (``hypermodal simulate SAMPLES --out SIM``) writes one dataset per
(simulation kind, source dataset), each with a ``dataset.json`` naming the real dataset it was
simulated from. The images are for training only; they are never evidence of accuracy.
"""

from __future__ import annotations

from hypermodal.sources.simulate.anatomy import Anatomy, Tissue, build_anatomy
from hypermodal.sources.simulate.drr import DrrImage, DrrParams, sample_drr_params, simulate_drrs
from hypermodal.sources.simulate.export import (
    CT_WINDOWS,
    ExportParams,
    encode_raster,
    export_image,
    sample_export_params,
)
from hypermodal.sources.simulate.pet import PetParams, PetVolume, sample_pet_params, simulate_pet
from hypermodal.sources.simulate.projector import Projector
from hypermodal.sources.simulate.run import SUMMARY_JSON, simulate_corpus
from hypermodal.sources.simulate.volumes import (
    RealDataset,
    SourceVolume,
    list_datasets,
    load_volumes,
    read_volume,
)
from hypermodal.sources.simulate.write import (
    SeriesIds,
    uid,
    write_pet_nifti,
    write_pet_series,
    write_radiograph,
)

__all__ = [
    "CT_WINDOWS",
    "SUMMARY_JSON",
    "Anatomy",
    "DrrImage",
    "DrrParams",
    "ExportParams",
    "PetParams",
    "PetVolume",
    "Projector",
    "RealDataset",
    "SeriesIds",
    "SourceVolume",
    "Tissue",
    "build_anatomy",
    "encode_raster",
    "export_image",
    "list_datasets",
    "load_volumes",
    "read_volume",
    "sample_drr_params",
    "sample_export_params",
    "sample_pet_params",
    "simulate_corpus",
    "simulate_drrs",
    "simulate_pet",
    "uid",
    "write_pet_nifti",
    "write_pet_series",
    "write_radiograph",
]
