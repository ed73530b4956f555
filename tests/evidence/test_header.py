"""Header evidence: the class a real DICOM header claims, and its probabilities."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from hypermodal.evidence import DEFAULT_TRUST, header_label, header_probs
from hypermodal.evidence.header import sop_kind
from hypermodal.io import read_header
from hypermodal.labels import ClassVocabulary
from tests.helpers import pydicom_file

FOUR = ClassVocabulary()
FIVE = ClassVocabulary.from_options(classes="CT,MR,PT,XR,OTHER", other="OTHER")
SC = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def _claim(name: str, vocabulary: ClassVocabulary) -> str | None:
    h = read_header(pydicom_file(name))
    return header_label(h.modality, h.extra.get("sop_class"), vocabulary)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CT_small.dcm", "CT"),
        ("MR_small.dcm", "MR"),
        ("emri_small.dcm", "MR"),  # enhanced MR SOP class, Modality MR
        ("RG3_UNCR.dcm", "XR"),  # CR -> XR through the vocabulary
    ],
)
def test_modality_of_real_headers_maps_through_the_vocabulary(name, expected):
    assert _claim(name, FOUR) == expected
    assert _claim(name, FIVE) == expected


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "color-pl.dcm"])
def test_ultrasound_is_other_only_when_the_vocabulary_has_it(name):
    assert _claim(name, FIVE) == "OTHER"
    assert _claim(name, FOUR) is None


def test_modalities_outside_the_map():
    nm = "1.2.840.10008.5.1.4.1.1.20"
    assert header_label("NM", nm, FIVE) == "OTHER"
    assert header_label("NM", nm, FOUR) is None
    assert header_label("us", None, FIVE) == "OTHER"  # case and spaces do not matter
    assert header_label(" ct ", None, FOUR) == "CT"
    assert header_label("DX", None, FOUR) == "XR"


@pytest.mark.parametrize(
    "name",
    [
        "liver_expb_1frame.dcm",  # SEG
        "JPEG2000.dcm",  # Modality NM, secondary capture
        "image_dfl.dcm",  # Modality OT, secondary capture
        "JPEGLSNearLossless_08.dcm",  # secondary capture without Modality
    ],
)
def test_non_image_objects_of_real_files_are_other(name):
    assert _claim(name, FIVE) == "OTHER"
    assert _claim(name, FOUR) is None


def test_secondary_capture_is_other_whatever_its_modality(tmp_path):
    """A real CT slice saved as a secondary capture still says ``Modality = CT``."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.SOPClassUID = SC
    ds.file_meta.MediaStorageSOPClassUID = SC
    ds.save_as(tmp_path / "sc.dcm")
    h = read_header(tmp_path / "sc.dcm")
    assert h.modality == "CT" and h.extra["sop_class"] == SC
    assert header_label(h.modality, h.extra["sop_class"], FIVE) == "OTHER"
    assert header_label(h.modality, h.extra["sop_class"], FOUR) is None


def test_non_image_sop_classes_and_modalities_whatever_the_other_tag():
    for sop in (SEG, "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.481.3", SC):
        assert header_label("MR", sop, FIVE) == "OTHER"
        assert header_label("CT", sop, FOUR) is None
    for code in ("SEG", "SR", "RTSTRUCT", "PR"):
        assert header_label(code, "1.2.840.10008.5.1.4.1.1.2", FIVE) == "OTHER"
    assert sop_kind(SEG) == "segmentation" and sop_kind(SC + ".4") == "secondary capture"
    assert sop_kind("1.2.840.10008.5.1.4.1.1.2") is None and sop_kind(None) is None


def test_missing_modality_claims_nothing():
    ct_sop = "1.2.840.10008.5.1.4.1.1.2"
    for vocabulary in (FOUR, FIVE):
        assert header_label(None, ct_sop, vocabulary) is None
        assert header_label("", None, vocabulary) is None
        assert header_label("   ", ct_sop, vocabulary) is None


def test_header_probs_rows():
    classes = FIVE.classes
    claims = ["MR", None, "OTHER", "US"]  # "US" is not a class: no claim
    p = header_probs(claims, classes)
    assert p.shape == (4, 5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, classes.index("MR")] == DEFAULT_TRUST
    np.testing.assert_allclose(np.delete(p[0], classes.index("MR")), (1 - DEFAULT_TRUST) / 4)
    np.testing.assert_allclose(p[1], 0.2)
    assert p[2].argmax() == classes.index("OTHER")
    np.testing.assert_allclose(p[3], 0.2)
    q = header_probs(["CT"], classes, trust=0.6)
    assert q[0, 0] == 0.6 and q[0, 1] == pytest.approx(0.1)
    assert header_probs([], classes).shape == (0, 5)


@pytest.mark.parametrize("trust", [0.25, 0.2, 1.0, 1.5, 0.0])
def test_header_trust_bounds(trust):
    with pytest.raises(ValueError, match="trust"):
        header_probs(["CT"], FOUR.classes, trust=trust)
    assert header_probs(["CT"], FOUR.classes, trust=0.26)[0, 0] == 0.26
