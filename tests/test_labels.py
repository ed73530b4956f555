import pytest

from hypermodal.labels import DEFAULT_CLASSES, ClassVocabulary


def test_default_classes_are_the_papers_four_in_order():
    v = ClassVocabulary()
    assert v.classes == ("CT", "MR", "PT", "XR") == DEFAULT_CLASSES
    assert [v.index(c) for c in v.classes] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("modality", "label"),
    [
        ("CT", "CT"),
        ("MR", "MR"),
        ("PT", "PT"),
        ("CR", "XR"),
        ("DX", "XR"),
        ("MG", "XR"),
        ("RF", "XR"),
        ("XA", "XR"),
        ("dx ", "XR"),
        ("US", None),
        ("NM", None),
        ("SR", None),
        ("", None),
        (None, None),
    ],
)
def test_dicom_modality_mapping(modality, label):
    assert ClassVocabulary().label_for_modality(modality) == label


def test_other_class_receives_unmapped_modalities():
    v = ClassVocabulary.from_options(classes="CT,MR,PT,XR,OTHER", other="OTHER")
    assert v.label_for_modality("US") == "OTHER"
    assert v.label_for_modality("CT") == "CT"


def test_rf_xa_can_be_dropped_and_extra_codes_added():
    v = ClassVocabulary.from_options(drop_modalities=("RF", "XA"), extra_modalities={"PX": "XR"})
    assert v.label_for_modality("RF") is None
    assert v.label_for_modality("XA") is None
    assert v.label_for_modality("PX") == "XR"


def test_free_text_labels_normalise():
    v = ClassVocabulary()
    assert v.normalise_label("PET") == "PT"
    assert v.normalise_label("mri") == "MR"
    assert v.normalise_label("CR") == "XR"
    assert v.normalise_label("ultrasound") is None


def test_round_trip_and_class_order_is_data(tmp_path):
    v = ClassVocabulary.from_options(classes="XR,CT,MR")
    v.save(tmp_path / "v.json")
    w = ClassVocabulary.load(tmp_path / "v.json")
    assert w == v
    assert w.index("XR") == 0
    assert w.label_for_modality("PT") is None  # PT not a class of this vocabulary


def test_invalid_vocabularies_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        ClassVocabulary(classes=("CT", "CT"))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ClassVocabulary(classes=("CT",), modality_map={"MR": "MR"})
    with pytest.raises(ValueError, match="OTHER"):
        ClassVocabulary(other="OTHER")
