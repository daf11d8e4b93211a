"""The asset graph and the running services as a picture: an SVG drawn here (no Graphviz needed), and
the same graph as Mermaid text for docs and wikis.

Assets are laid out in columns by depth (an asset sits one column right of its deepest parent),
coloured by group; the services `ct start` runs are a row underneath, green when healthy."""

from __future__ import annotations

from html import escape
from pathlib import Path

GROUP_COLOURS = {"ingestion": "#dbeafe", "quality": "#fef3c7", "processing": "#e0e7ff", "features": "#dcfce7",
                 "training": "#fce7f3", "deployment": "#ede9fe", "monitoring": "#ffedd5"}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 26, 60, 10, 20


def asset_graph() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(asset -> group, edges parent -> child) of the main code location."""
    from ct_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = {n.key.to_user_string(): n.group_name or "default" for n in graph.asset_nodes}
    edges = [(p.to_user_string(), n.key.to_user_string()) for n in graph.asset_nodes for p in n.parent_keys
             if p.to_user_string() in groups]
    return groups, edges


def _depths(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        parents[b].append(a)
    depth: dict[str, int] = {}

    def visit(n: str) -> int:
        if n not in depth:
            depth[n] = 0  # guards against a cycle (there is none in an asset graph)
            depth[n] = 1 + max((visit(p) for p in parents[n]), default=-1)
        return depth[n]

    for n in nodes:
        visit(n)
    return depth


def mermaid(groups: dict[str, str], edges: list[tuple[str, str]], services: dict[str, bool]) -> str:
    lines = ["flowchart LR"]
    for group in sorted(set(groups.values())):
        lines.append(f"  subgraph {group}")
        lines += [f"    {a}[{a}]" for a in sorted(groups) if groups[a] == group]
        lines.append("  end")
    lines += [f"  {a} --> {b}" for a, b in edges]
    if services:
        lines.append("  subgraph services")
        lines += [f"    svc_{s}([{s}: {'up' if ok else 'DOWN'}])" for s, ok in services.items()]
        lines.append("  end")
    return "\n".join(lines) + "\n"


def svg(groups: dict[str, str], edges: list[tuple[str, str]], services: dict[str, bool]) -> str:
    depth = _depths(list(groups), edges)
    columns: dict[int, list[str]] = {}
    for n in sorted(groups, key=lambda n: (groups[n], n)):
        columns.setdefault(depth[n], []).append(n)
    pos = {}
    for col, names in columns.items():
        for row, n in enumerate(names):
            pos[n] = (MARGIN + col * (BOX_W + GAP_X), MARGIN + 30 + row * (BOX_H + GAP_Y))
    width = MARGIN * 2 + (max(columns) + 1) * (BOX_W + GAP_X)
    graph_bottom = max(y for _, y in pos.values()) + BOX_H + 30
    height = graph_bottom + (80 if services else 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 10}" font-size="14" font-weight="bold">Asset graph '
           f'({len(groups)} assets)</text>']
    for a, b in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        out.append(f'<path d="M{x1 + BOX_W},{y1 + BOX_H / 2} C{x1 + BOX_W + GAP_X / 2},{y1 + BOX_H / 2} '
                   f'{x2 - GAP_X / 2},{y2 + BOX_H / 2} {x2},{y2 + BOX_H / 2}" fill="none" stroke="#94a3b8"/>')
    for n, (x, y) in pos.items():
        colour = GROUP_COLOURS.get(groups[n], "#f1f5f9")
        out.append(f'<g><title>{escape(n)} ({escape(groups[n])})</title><rect x="{x}" y="{y}" width="{BOX_W}" '
                   f'height="{BOX_H}" rx="4" fill="{colour}" stroke="#475569"/><text x="{x + 6}" y="{y + 17}">'
                   f'{escape(n)}</text></g>')
    legend_x = MARGIN + 160
    for i, (group, colour) in enumerate(GROUP_COLOURS.items()):
        x = legend_x + i * 100
        out.append(f'<rect x="{x}" y="{MARGIN}" width="12" height="12" fill="{colour}" stroke="#475569"/>'
                   f'<text x="{x + 16}" y="{MARGIN + 10}">{group}</text>')
    if services:
        out.append(f'<text x="{MARGIN}" y="{graph_bottom + 10}" font-size="14" font-weight="bold">Services</text>')
        for i, (name, ok) in enumerate(services.items()):
            x = MARGIN + i * (BOX_W + 20)
            out.append(f'<rect x="{x}" y="{graph_bottom + 22}" width="{BOX_W}" height="{BOX_H + 8}" rx="12" '
                       f'fill="{"#bbf7d0" if ok else "#fecaca"}" stroke="#475569"/><text x="{x + 10}" '
                       f'y="{graph_bottom + 42}">{escape(name)}: {"up" if ok else "DOWN"}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(out: Path, services: dict[str, bool]) -> tuple[Path, Path]:
    groups, edges = asset_graph()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg(groups, edges, services))
    mmd = out.with_suffix(".mmd")
    mmd.write_text(mermaid(groups, edges, services))
    return out, mmd
