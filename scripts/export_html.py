"""Export executed notebooks to self-contained HTML pages that also work offline.

    python scripts/export_html.py IN_DIR OUT_DIR      # e.g. runs/cpu/notebooks reports

Every `NN_*.ipynb` in IN_DIR becomes `OUT_DIR/NN_*.html` (nbconvert's HTMLExporter, lab template,
outputs included, PNG figures embedded as data URIs). What would otherwise be fetched from a CDN
when the page is opened is handled here:

* bertviz views (`head_view` / `model_view`) need require.js, d3 and jQuery, which bertviz loads
  from cdnjs. The copies in `scripts/vendor/` are inlined once into the page's <head> (d3 and jQuery
  first, so they become globals rather than anonymous AMD modules, then require.js, then
  `define('d3')` / `define('jquery')` pointing at those globals), and the
  `<script src="https://cdnjs.../require.min.js">` tags bertviz prints are removed. Pages with no
  script output get none of this.
* ipywidgets outputs (tqdm progress bars) would need the widget manager from jsdelivr; they are
  drawn as static HTML from the widget state saved in the notebook (text fallback otherwise).
* MathJax (cdnjs) and mermaid (cdnjs) are kept only on pages that contain TeX or a mermaid
  diagram; those still need the network to typeset. No chapter uses either.

The output is a function of the notebook alone (no timestamps, no random element ids), so
re-exporting an unchanged notebook gives a byte-identical file. Prints one line per page.
"""

from __future__ import annotations

import argparse
import html
import itertools
import logging
import re
import sys
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

VENDOR = Path(__file__).resolve().parent / "vendor"
# Order matters: d3 and jQuery see no `define` yet and set window.d3 / window.jQuery.
VENDORED_JS = ("d3-5.7.0/d3.min.js", "jquery-2.2.4/jquery.min.js", "requirejs-2.3.6/require.min.js")
AMD_SHIM = (
    "define('d3', [], function () { return window.d3; });\ndefine('jquery', [], function () { return window.jQuery; });"
)
PLACEHOLDER = "<!-- export_html: vendored scripts -->"

TEMPLATE = (
    """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}
"""
    + PLACEHOLDER
    + """
{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}
<style>
/* Figures at their saved size (8-pt text stays 8 pt); wide ones scroll instead of shrinking. */
.jp-RenderedImage { overflow-x: auto !important; }
.jp-RenderedImage img { max-width: none !important; }
</style>
{% endblock extra_css %}
{%- block html_head_js_mathjax -%}{%- if resources.offline_needs_mathjax -%}{{ super() }}{%- endif -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- if resources.offline_needs_mermaid -%}{{ super() }}{%- endif -%}{%- endblock html_head_js_mermaidjs -%}
"""
)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# <script src="http(s)://.../require.js|require.min.js"></script>, as bertviz prints it.
REMOTE_REQUIRE = re.compile(
    r"""<script\b[^>]*\bsrc\s*=\s*["']https?://[^"']*/require(?:\.min)?\.js["'][^>]*>\s*</script>\s*""", re.I
)
TEX = re.compile(r"\$\$|\\\(|\\\[|\\begin\{|(?<![\\$\w])\$[^\s$][^$\n]*?(?<![\s\\])\$(?![\w$])")
REMOTE_TAG = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["'](https?://[^"']+)""", re.I)
BAR_COLORS = {"success": "#5cb85c", "info": "#5bc0de", "warning": "#f0ad4e", "danger": "#d9534f"}


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _vendored_head() -> str:
    parts = []
    for rel in VENDORED_JS:
        js = (VENDOR / rel).read_text(encoding="utf-8")
        if re.search(r"</script", js, re.I):  # would end the inline <script> early
            raise SystemExit(f"export_html.py: {VENDOR / rel} contains '</script' and cannot be inlined")
        parts.append(f'<script data-vendored="{rel}">\n{js.rstrip()}\n</script>')
    parts.append(f'<script data-vendored="amd-shim">\n{AMD_SHIM}\n</script>')
    return "\n".join(parts)


# --- ipywidgets -> static HTML ---------------------------------------------------------------------


def _widget_html(model_id: str, state: dict, depth: int = 0) -> str | None:
    """Static HTML for the widgets tqdm uses (boxes, HTML/Label, progress bars) from the saved
    widget state; None when a model is missing or of another kind (the caller falls back to text)."""
    model = state.get(model_id)
    if model is None or depth > 20:
        return None
    name, s = model.get("model_name", ""), model.get("state", {})
    layout = state.get(str(s.get("layout", "")).removeprefix("IPY_MODEL_"), {}).get("state", {})
    if layout.get("display") == "none" or layout.get("visibility") == "hidden":
        return ""
    desc = f'<span class="offline-widget-desc">{html.escape(s["description"])}</span>' if s.get("description") else ""
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        kids = [_widget_html(str(c).removeprefix("IPY_MODEL_"), state, depth + 1) for c in s.get("children", [])]
        if any(k is None for k in kids):
            return None
        direction = "column" if name == "VBoxModel" else "row"
        return (
            f'<div class="offline-widget" style="display:flex;flex-direction:{direction};'
            f'align-items:center;gap:0.5em;font-family:monospace">{"".join(kids)}</div>'
        )
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"{desc}<span>{s.get('value', '')}</span>"  # the kernel's HTML, as a text/html output would be
    if name == "LabelModel":
        return f"{desc}<span>{html.escape(str(s.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        lo, hi, val = (float(s.get(k) or 0) for k in ("min", "max", "value"))
        pct = 0.0 if hi <= lo else min(max((val - lo) / (hi - lo), 0.0), 1.0) * 100
        color = BAR_COLORS.get(s.get("bar_style") or "", "#2196f3")
        return (
            f'{desc}<span role="progressbar" aria-valuenow="{val:g}" aria-valuemin="{lo:g}" aria-valuemax="{hi:g}" '
            f'style="display:inline-block;flex:1;min-width:10em;max-width:30em;height:1em;background:#eee">'
            f'<span style="display:block;height:100%;width:{pct:.1f}%;background:{color}"></span></span>'
        )
    return None


def _offline_notebook(nb) -> tuple[dict, int]:
    """Rewrite outputs in place (the caller's copy): drop remote require.js tags, render widgets
    statically. Returns (resource flags, number of require.js tags removed)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    removed = 0
    needs_js = needs_tex = needs_mermaid = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            needs_tex |= bool(TEX.search(cell.source))
            needs_mermaid |= "```mermaid" in cell.source
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data is None:
                kept.append(out)
                continue
            if WIDGET_VIEW in data:
                static = _widget_html(str(data[WIDGET_VIEW].get("model_id", "")), state)
                if static == "":
                    continue  # hidden widget (tqdm with leave=False): nothing to show
                plain = data.get("text/plain")
                out.data = {"text/html": static} if static is not None else {}
                if plain is not None:
                    out.data["text/plain"] = plain
                if not out.data:
                    continue
                data = out.data
            if "text/html" in data:
                src = _text(data.get("text/html"))
                new, n = REMOTE_REQUIRE.subn("", src)
                removed += n
                if n and not new.strip() and set(out.data) <= {"text/html", "text/plain"}:
                    continue  # the output was only the <script src=require.js> tag
                out.data["text/html"] = new
                needs_js |= "<script" in new.lower()
            needs_js |= "application/javascript" in out.data
            needs_tex |= "text/latex" in out.data or bool(TEX.search(_text(out.data.get("text/markdown"))))
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)  # its state script and the CDN widget manager are not needed
    flags = {
        "offline_needs_vendored_js": needs_js or removed > 0,
        "offline_needs_mathjax": needs_tex,
        "offline_needs_mermaid": needs_mermaid,
    }
    return flags, removed


class OfflineHTMLExporter(HTMLExporter):
    """HTMLExporter (lab template) with the offline template above and deterministic output ids."""

    def __init__(self, **kw):
        kw.setdefault("embed_images", True)  # markdown <img> too, not only PNG outputs
        super().__init__(
            extra_loaders=[DictLoader({"offline.html.j2": TEMPLATE})], template_file="offline.html.j2", **kw
        )

    def from_notebook_node(self, nb, resources=None, **kw):
        ids = itertools.count(1)
        # nbconvert names the <div> of every JavaScript/widget output with uuid4(); number them instead.
        self.environment.globals["uuid4"] = lambda: f"output-{next(ids)}"
        return super().from_notebook_node(nb, resources, **kw)


def drop_overridden_defaults(nb) -> int:
    """papermill keeps the notebook's default `parameters` cell and adds an `injected-parameters` cell after it:
    the page shows only the values that ran. Returns the number of cells dropped."""
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    if not any("injected-parameters" in t for t in tags):
        return 0
    before = len(nb.cells)
    nb.cells = [c for c, t in zip(nb.cells, tags) if "parameters" not in t]
    return before - len(nb.cells)


def export_notebook(path: Path, out_dir: Path, exporter: OfflineHTMLExporter | None = None) -> tuple[Path, dict]:
    exporter = exporter or OfflineHTMLExporter()
    nb = nbformat.read(path, as_version=4)
    drop_overridden_defaults(nb)
    flags, removed = _offline_notebook(nb)
    heading = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"), "")
    nb.metadata["title"] = heading or path.stem  # the browser tab shows the chapter's title, not its file name
    resources = {"metadata": {"name": path.stem, "path": str(path.parent)}, **flags}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    if body.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{path}: the offline template's placeholder is missing from the page")
    body = body.replace(PLACEHOLDER, _vendored_head() if flags["offline_needs_vendored_js"] else "")
    target = out_dir / (path.stem + ".html")
    target.write_bytes(body.encode("utf-8"))
    remote = sorted({u for u in REMOTE_TAG.findall(body)})
    return target, {"bytes": len(body.encode("utf-8")), "require_tags_removed": removed, "remote": remote, **flags}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("in_dir", type=Path, help="folder of executed notebooks (NN_*.ipynb)")
    ap.add_argument("out_dir", type=Path, help="folder for the HTML pages (created if missing)")
    args = ap.parse_args(argv)
    if not args.in_dir.is_dir():
        print(f"export_html.py: no such folder: {args.in_dir}", file=sys.stderr)
        return 2
    notebooks = sorted(args.in_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        print(f"export_html.py: no NN_*.ipynb notebooks in {args.in_dir}", file=sys.stderr)
        return 2
    logging.getLogger("traitlets").setLevel(logging.ERROR)  # "alternative text is missing" per figure
    args.out_dir.mkdir(parents=True, exist_ok=True)
    exporter = OfflineHTMLExporter()
    for path in notebooks:
        target, info = export_notebook(path, args.out_dir, exporter)
        notes = []
        if info["require_tags_removed"]:
            n = info["require_tags_removed"]
            notes.append(f"{n} remote require.js tag{'' if n == 1 else 's'} replaced by inlined copies")
        if info["remote"]:
            notes.append("still loads from the network: " + ", ".join(info["remote"]))
        print(f"wrote {target} ({info['bytes'] / 1024:.0f} kB)" + (f"; {'; '.join(notes)}" if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
