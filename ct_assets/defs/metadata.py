"""Dagster UI metadata helpers: Markdown tables and inline plots."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ct_assets.core.plots import pyplot, save_figure  # noqa: F401  (re-exported for the assets)

if TYPE_CHECKING:
    import pandas as pd


def table_md(df: pd.DataFrame, rows: int | None = None) -> dg.MetadataValue:
    df = df if rows is None else df.head(rows)
    if df.empty:
        return dg.MetadataValue.md("none")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def image_md(path: Path, alt: str = "plot") -> dg.MetadataValue:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")
