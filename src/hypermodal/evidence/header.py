"""Header evidence: what the DICOM header claims, as a probability with a stated trust.

The Modality tag (0008,0060) is right most of the time, but not always: archives hold relabelled
series, secondary captures of any modality and exports with default values. So the header is one
piece of evidence among three, not the answer: :func:`header_probs` gives the claimed class
probability :data:`DEFAULT_TRUST` and spreads the rest evenly; the fusion
(:mod:`hypermodal.evidence.fusion`) learns how far to believe it. A file without a header claim
(NIfTI, PNG, JPEG, a DICOM without Modality) has no header evidence: uniform probabilities,
which change nothing in the fusion.

Objects that are not acquired images of a class in the vocabulary say so in their SOP Class UID
whatever their Modality: segmentations, structured reports, RT structure sets, presentation
states, secondary captures. They count as ``OTHER`` when the vocabulary has it.
"""

from __future__ import annotations

import numpy as np

from hypermodal.labels import ClassVocabulary

#: Probability given to the class the header claims (the rest is spread over the other classes).
DEFAULT_TRUST = 0.9

#: SOP Class UID prefixes of objects that are not acquired images of a vocabulary class.
NON_IMAGE_SOP_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
}

#: Modality codes of objects that are not images of a vocabulary class.
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "DOC"})


def sop_kind(sop_class: str | None) -> str | None:
    """What a non-image SOP class is (``"segmentation"``, ...), or None for an image class."""
    if not sop_class:
        return None
    for prefix, kind in NON_IMAGE_SOP_PREFIXES.items():
        if sop_class == prefix or sop_class.startswith(prefix):
            return kind
    return None


def header_label(
    modality: str | None, sop_class: str | None, vocabulary: ClassVocabulary
) -> str | None:
    """The class the header claims, or None when it claims nothing.

    A non-image SOP class or modality (SEG, SR, secondary capture, ...) claims ``OTHER`` when the
    vocabulary has an ``other`` class; any modality outside the map (US, NM, ...) claims
    ``vocabulary.other`` too. Without an ``other`` class such files claim nothing.
    """
    code = str(modality or "").strip().upper()
    if sop_kind(sop_class) is not None or code in NON_IMAGE_MODALITIES:
        return vocabulary.other
    if not code:
        return None
    return vocabulary.label_for_modality(code)


def header_probs(
    claims: list[str | None], classes: tuple[str, ...], trust: float = DEFAULT_TRUST
) -> np.ndarray:
    """Probabilities (rows × classes) from each row's claimed class (None: uniform).

    Raises:
        ValueError: ``trust`` outside (1/K, 1).
    """
    k = len(classes)
    if not 1.0 / k < trust < 1.0:
        raise ValueError(f"header trust must be between {1.0 / k:.3f} and 1, got {trust}")
    out = np.full((len(claims), k), 1.0 / k)
    index = {c: i for i, c in enumerate(classes)}
    for row, claim in enumerate(claims):
        if claim in index:
            out[row] = (1.0 - trust) / (k - 1)
            out[row, index[claim]] = trust
    return out
