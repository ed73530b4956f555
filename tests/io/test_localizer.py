import pytest

from hypermodal.io.dicom import is_localizer


@pytest.mark.parametrize(
    ("image_type", "description", "expected"),
    [
        (["ORIGINAL", "PRIMARY", "LOCALIZER"], None, True),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "AAHead_Scout_32ch-head-coil", True),
        (["ORIGINAL", "PRIMARY"], "anat-scout", True),
        (["ORIGINAL", "PRIMARY"], "Topogram  1.0  T20s", True),
        (["ORIGINAL", "PRIMARY"], "Survey SENSE", True),
        (["ORIGINAL", "PRIMARY", "AXIAL"], "T1 MPRAGE", False),
        (["ORIGINAL", "PRIMARY", "AXIAL"], "Lung 1.0 B70f", False),
        ([], None, False),
    ],
)
def test_localizer_by_image_type_or_series_description(image_type, description, expected):
    assert is_localizer(image_type, description) is expected
