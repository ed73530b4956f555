"""The QIDO-RS filter options of the commands that read a DICOMweb server (``fetch --dicomweb``,
``predict --dicomweb``): one set of options, parsed into one
:class:`~hypermodal.sources.fetch.query.SeriesQuery`.

Use them in a command's signature and turn them into the query with :func:`series_query`::

    def fetch(..., modality: ModalityOption = None, study_date: StudyDateOption = None,
              patient: PatientOption = None, study: StudyOption = None,
              limit: LimitOption = None, sample: SampleOption = "first",
              seed: SampleSeedOption = 0):
        query = series_query(modality, study_date, patient, study, limit, sample, seed)

A bad value raises :class:`ValueError` with one line naming the option, which the commands'
error wrapper prints (exit status 2). Only :mod:`typer` is imported here.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hypermodal.cli._common import NonNegative, Positive

ModalityOption = Annotated[
    str | None,
    typer.Option(metavar="CT,MR", help="DICOMweb: only series of these modalities."),
]
StudyDateOption = Annotated[
    str | None,
    typer.Option(
        metavar="FROM-TO",
        help="DICOMweb: only studies dated YYYYMMDD-YYYYMMDD (an end may be left open).",
    ),
]
PatientOption = Annotated[
    str | None, typer.Option(metavar="ID,ID", help="DICOMweb: only these PatientIDs.")
]
StudyOption = Annotated[
    str | None, typer.Option(metavar="UID,UID", help="DICOMweb: only these StudyInstanceUIDs.")
]
LimitOption = Annotated[
    int | None,
    typer.Option(metavar="N", help="DICOMweb: at most N series.", callback=Positive),
]
SampleOption = Annotated[
    str,
    typer.Option(
        metavar="FIRST|RANDOM",
        help="DICOMweb, with --limit: the first N series or a seeded random sample of them all.",
    ),
]
SampleSeedOption = Annotated[
    int,
    typer.Option(metavar="N", help="Seed of --sample random.", callback=NonNegative),
]


def series_query(
    modality: str | None = None,
    study_date: str | None = None,
    patient: str | None = None,
    study: str | None = None,
    limit: int | None = None,
    sample: str = "first",
    seed: int = 0,
) -> Any:
    """The :class:`~hypermodal.sources.fetch.query.SeriesQuery` of the options.

    Raises:
        ValueError: one line naming the option that is wrong.
    """
    from hypermodal.sources.fetch.query import SeriesQuery

    return SeriesQuery.from_options(
        modality=modality,
        study_date=study_date,
        patient=patient,
        study=study,
        limit=limit,
        sample=sample,
        seed=seed,
    )


def query_given(
    modality: str | None,
    study_date: str | None,
    patient: str | None,
    study: str | None,
    limit: int | None,
) -> list[str]:
    """The names of the filter options that were given (to refuse them without --dicomweb)."""
    given = {
        "--modality": modality,
        "--study-date": study_date,
        "--patient": patient,
        "--study": study,
        "--limit": limit,
    }
    return [name for name, value in given.items() if value is not None]
