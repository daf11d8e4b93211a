"""Dagster UI metadata helpers: Markdown tables and inline plots."""

from __future__ import annotations

from typing import TYPE_CHECKING

import base64
from pathlib import Path

import dagster as dg

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


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (imported on use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path
