"""One self-contained HTML file with every table and figure of a run and the config that produced it.

Tables come from their Markdown files (Python-Markdown's ``tables`` extension), figures are embedded as
base64 PNGs (a folder of figures contributes all its PNGs), so the file can be mailed or opened offline.
A small inline script records on ``<body>`` how many images decoded (``data-images-loaded`` /
``data-images-total``) — what the headless-browser test reads.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import markdown
import yaml

from stitchlib import io

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 560px; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""

_CHECK = """
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def _figures(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(p.glob("*.png")) if p.is_dir() else [p] if p.suffix == ".png" else []
    return out


def _caption(path: Path, results: Path) -> str:
    rel = path.relative_to(results) if path.is_relative_to(results) else path
    return html.escape(str(rel))


def _section(title: str, items: list[Path], results: Path) -> str:
    parts = [f'<h2 id="{html.escape(title.lower().replace(" ", "-"))}">{html.escape(title)}</h2>']
    for md in (p for p in items if p.suffix == ".md"):
        parts.append(markdown.markdown(md.read_text(), extensions=["tables"]))
        parts.append(f'<p><small>{_caption(md, results)} (CSV beside it)</small></p>')
    for png in _figures(items):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<figure><img alt="{_caption(png, results)}" src="data:image/png;base64,{data}">'
                     f'<figcaption>{_caption(png, results)}</figcaption></figure>')
    return "\n".join(parts)


def group(paths: Iterable[str | Path], results: str | Path) -> dict[str, list[Path]]:
    """Outputs by section: each dataset's tables first, then its figures by folder (intra/inter heatmaps, OOD,
    cross-architecture, …)."""
    results = Path(results)
    out: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        if p.suffix == ".csv":
            continue
        rel = p.relative_to(results).parts if p.is_relative_to(results) else p.parts
        if rel[0] == "tables":
            key = f"Tables ({rel[1]})"
        elif rel[0] == "figures" and len(rel) > 2:
            key = f"Figures ({rel[1]}): {rel[2]}"
        else:
            key = "Other outputs"
        out.setdefault(key, []).append(p)
    return dict(sorted(out.items(), key=lambda kv: (not kv[0].startswith("Tables"), kv[0])))


def write(out: str | Path, outputs: Iterable[str | Path], config: dict[str, Any], results: str | Path,
          title: str = "stitchlib report") -> None:
    """Write the report of ``outputs`` (tables' .md/.csv, figure PNGs or folders of PNGs) to ``out``."""
    sections = group(outputs, results)
    nav = " ".join(f'<a href="#{html.escape(t.lower().replace(" ", "-"))}">{html.escape(t)}</a>' for t in sections)
    body = "\n".join(_section(t, items, Path(results)) for t, items in sections.items())
    prov = io.provenance()
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style><script>{_CHECK}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p>stitchlib {html.escape(str(prov.get("stitchlib", "")))}, git {html.escape(str(prov.get("git_commit", "?")))}.
Values and settings: see the configuration at the end.</p>
<nav>{nav} <a href="#configuration">Configuration</a></nav>
{body}
<h2 id="configuration">Configuration</h2>
<pre>{html.escape(yaml.safe_dump(config, sort_keys=True, allow_unicode=True))}</pre>
</body></html>
"""
    io.write_text(out, doc)
