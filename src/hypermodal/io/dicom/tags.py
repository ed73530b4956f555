"""The DICOM elements the reader uses, and their values decoded from raw bytes.

The reader keeps only the elements named here while parsing (``specific_tags``): the header's
(:data:`HEADER_TAGS`) and, for decoding, those plus what pixel processing reads
(:data:`PIXEL_TAGS`). Plain text and unsigned-short header values are decoded straight from
their raw bytes (:func:`raw_value`), which is much cheaper than pydicom's element conversion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

#: the pixel data elements, by (group, element)
PIXEL_ELEMENTS = {
    (0x7FE0, 0x0010): "PixelData",
    (0x7FE0, 0x0008): "FloatPixelData",
    (0x7FE0, 0x0009): "DoubleFloatPixelData",
}
#: the length of a sequence, item or encapsulated pixel data that is closed by a delimiter
UNDEFINED_LENGTH = 0xFFFFFFFF
#: explicit-VR codes whose element header has 2 reserved bytes and a 4-byte length
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: every explicit-VR code
ALL_VRS = LONG_VRS | frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
)

# Only these elements are kept when parsing (others are skipped, not converted): ~25 % faster
HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "Manufacturer",
    "StudyDescription",
    "SeriesDescription",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "BodyPartExamined",
    "ImageType",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
)
#: the header's tags, Specific Character Set first, as dcmread does
HEADER_TAGS: list[int] = [0x00080005] + [
    tag_for_keyword(k)  # type: ignore[misc]
    for k in HEADER_KEYWORDS
]
# Image Pixel module elements of VR US (binary unsigned short); all the other header elements
# are text (CS, LO, SH, UI, IS, DS)
_US_KEYWORDS = frozenset(
    {
        "SamplesPerPixel",
        "PlanarConfiguration",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    }
)
#: header tag -> keyword (Specific Character Set left out: it is not a header value)
TAG_KEYWORDS = dict(zip(HEADER_TAGS[1:], HEADER_KEYWORDS, strict=True))
# for decoding: the header's elements plus what pixel processing reads (modality LUT, palette,
# functional groups for per-frame rescale, extended offset table). Kept short on purpose:
# pydicom normalises the whole list on every read.
_PIXEL_KEYWORDS = (
    "RescaleType",
    "ModalityLUTSequence",
    "PaletteColorLookupTableUID",
    *(
        f"{colour}PaletteColorLookupTable{part}"
        for colour in ("Red", "Green", "Blue", "Alpha")
        for part in ("Descriptor", "Data")
    ),
    *(f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue", "Alpha")),
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
#: the tags kept when a file is opened to decode its pixels
PIXEL_TAGS: list[int] = sorted(
    set(HEADER_TAGS) | {tag_for_keyword(k) for k in _PIXEL_KEYWORDS}  # type: ignore[misc]
)

#: SeriesDescription words that name a scout when ImageType does not say LOCALIZER
#: (Siemens "AAHead_Scout", GE "3-pl loc", Philips "Survey", CT "Topogram"/"Scanogram").
_SCOUT_WORDS = re.compile(r"(scout|locali[sz]er|survey|topogram|scanogram|\bloc\b|3-?pl)", re.I)


class PixelElement:
    """Where the pixel data element starts, as read from the bytes after the header.

    Attributes:
        keyword: ``"PixelData"``, ``"FloatPixelData"`` or ``"DoubleFloatPixelData"``.
        vr: The element's VR as written (None for implicit VR).
        length: The value length (:data:`UNDEFINED_LENGTH` when encapsulated).
        value_offset: Byte offset of the value in the (decompressed) file.
    """

    def __init__(self, keyword: str, vr: str | None, length: int, value_offset: int) -> None:
        self.keyword = keyword
        self.vr = vr
        self.length = length
        self.value_offset = value_offset

    @property
    def encapsulated(self) -> bool:
        """Whether the pixel data are encapsulated (compressed frames in items)."""
        return self.length == UNDEFINED_LENGTH


def raw_value(keyword: str, value: bytes, little: bool) -> Any:
    """A header element's value from its raw bytes (US as int, text as str or list of str).

    Args:
        keyword: The element's keyword (one of :data:`HEADER_KEYWORDS`).
        value: The raw value bytes.
        little: Whether the dataset is little endian.

    Returns:
        An int for the US elements (None when shorter than 2 bytes), else the Latin-1 text,
        stripped, as a list of parts when multi-valued.
    """
    if keyword in _US_KEYWORDS:
        if len(value) < 2:
            return None
        return int.from_bytes(value[:2], "little" if little else "big")
    text = value.decode("latin-1").strip(" \x00")
    return [part.strip() for part in text.split("\\")] if "\\" in text else text


def header_values(ds: Dataset) -> dict[str, Any]:
    """The header elements' values, decoded straight from the raw bytes where that is safe.

    pydicom's general element conversion costs ~10 µs an element; the header needs ~20 plain
    text or unsigned-short values, which are decoded here directly (text as Latin-1, stripped;
    multi-valued text as a list). Anything unusual falls back to pydicom's conversion.

    Args:
        ds: A dataset parsed with raw (unconverted) elements.

    Returns:
        Keyword -> value for the header elements present.
    """
    little = ds.original_encoding[1] is not False
    values: dict[str, Any] = {}
    for tag, keyword in TAG_KEYWORDS.items():
        raw = ds.get_item(tag)
        if raw is None:
            continue
        value = getattr(raw, "value", None)
        if not isinstance(value, bytes):  # already converted (or odd): use pydicom's value
            values[keyword] = ds[tag].value
            continue
        values[keyword] = raw_value(keyword, value, little)
    return values


def text_value(v: dict[str, Any], keyword: str) -> str | None:
    """A header value as stripped text (None when absent or blank)."""
    value = v.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def float_values(v: dict[str, Any], keyword: str) -> list[float] | None:
    """A (possibly multi-valued) decimal header value as floats (None when absent or unreadable)."""
    value = v.get(keyword)
    if value is None:
        return None
    items = str(value).split("\\") if isinstance(value, str | bytes) else list(value)
    try:
        numbers = [float(x) for x in items if str(x).strip()]
    except (TypeError, ValueError):
        return None
    return numbers or None


def upper_values(v: dict[str, Any], keyword: str) -> list[str]:
    """A (possibly multi-valued) header value as a list of stripped upper-case strings."""
    value = v.get(keyword)
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [v.strip().upper() for v in str(value).split("\\")]
    return [str(v).strip().upper() for v in value]


def is_localizer(image_type: Iterable[str], series_description: str | None) -> bool:
    """True for localizer/scout images, which look like radiographs but are CT/MR.

    Args:
        image_type: The ImageType values.
        series_description: The SeriesDescription, if any.

    Returns:
        Whether ImageType says LOCALIZER or the description names a scout.
    """
    if "LOCALIZER" in {str(v).upper() for v in image_type}:
        return True
    return bool(series_description and _SCOUT_WORDS.search(series_description))
