"""``hypermodal plan``: plan a corpus at series level from the IDC index, offline.

Examples::

    hypermodal plan --paper --out plans/paper
    hypermodal plan --spec corpus.yaml --out plans/mine --auto-split --seed 3
    hypermodal plan --spec corpus.yaml --catalog tcia_series.csv --out plans/tcia
    hypermodal plan --paper --catalog tcia_brain_hn.csv --add-to-index --out plans/paper-full

``--catalog`` takes a local series listing (for example a TCIA/NBIA export) as CSV or Parquet
with the IDC index's column names (at least collection_id, SeriesInstanceUID, Modality,
instanceCount); rows match a dataset by its collection_id, or by its name when it has none.
With ``--add-to-index`` the IDC index is read as well and the catalog only supplies the
collections the index lacks (the 16 Appendix A collections IDC does not host, for example).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def plan(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for plan.parquet and summaries.")
    ],
    paper: Annotated[
        bool, typer.Option("--paper", help="Use the bundled spec of the paper's Appendix A.")
    ] = False,
    spec: Annotated[Path | None, typer.Option(help="Corpus spec (YAML).")] = None,
    index: Annotated[
        Path | None, typer.Option(help="IDC index Parquet (default: idc-index-data's).")
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(help="Local series catalog (CSV/Parquet, IDC column names) instead of IDC."),
    ] = None,
    add_to_index: Annotated[
        bool,
        typer.Option(
            "--add-to-index",
            help="Read the IDC index too; --catalog fills the collections it lacks.",
        ),
    ] = False,
    auto_split: Annotated[
        bool, typer.Option("--auto-split", help="Assign whole datasets to splits automatically.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the automatic split.")] = 0,
    ratios: Annotated[
        str, typer.Option(help="Target train,validate,test shares of every class.")
    ] = "0.7,0.15,0.15",
    min_locations: Annotated[
        int, typer.Option(help="Body locations each class should show in every split.")
    ] = 2,
) -> None:
    """Plan a corpus: series per dataset, caps, split, images per class and download size."""
    import json
    import logging

    from hypermodal.sources.plan import load_spec, paper_spec, plan_from_index, write_plan

    if paper == (spec is not None):
        raise ValueError("give exactly one of --paper and --spec FILE")
    if index is not None and catalog is not None and not add_to_index:
        raise ValueError("give at most one of --index and --catalog (or add --add-to-index)")
    if add_to_index and catalog is None:
        raise ValueError("--add-to-index needs --catalog")
    parts = [float(x) for x in ratios.split(",")]
    if len(parts) != 3:
        raise ValueError(f"--ratios expects three numbers train,validate,test; got {ratios!r}")
    corpus = paper_spec() if paper else load_spec(spec)  # type: ignore[arg-type]
    result = plan_from_index(
        corpus,
        index=index,
        catalog=catalog,
        combine=add_to_index,
        auto=auto_split,
        seed=seed,
        ratios=(parts[0], parts[1], parts[2]),
        min_locations=min_locations,
    )
    paths = write_plan(result, out, corpus)
    s = result.summary
    logging.getLogger("hypermodal").info(
        "planned %d series in %.2f s; wrote %s", s["series"], s["plan_seconds_total"], out
    )
    typer.echo(
        json.dumps(
            {
                "images": s["images_total"],
                "series_kept": s["series_kept"],
                "download_GiB": round(s["download_MB"] / 1024, 1),
                "seconds": s["plan_seconds_total"],
                "files": {k: str(v) for k, v in paths.items()},
            },
            indent=2,
        )
    )


COMMANDS = {"plan": plan}
