"""scripts/export_html.py: offline, self-contained, deterministic HTML pages from executed notebooks."""

import importlib.util
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lib.config import ROOT

spec = importlib.util.spec_from_file_location("export_html", ROOT / "scripts" / "export_html.py")
export_html = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_html)

CDN_REQUIRE = '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>'
BERTVIZ_JS = """require.config({paths: {d3: 'https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min',
  jquery: 'https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min'}});
requirejs(['jquery', 'd3'], function ($, d3) { $('#bertviz-test').text('d3 ' + d3.version); });"""
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def widget_state(model_id, desc, value, visibility=None):
    """tqdm's widget tree: HBox(HTML, FloatProgress, HTML), each with a layout."""
    ids = {k: f"{model_id}{k}" for k in ("desc", "bar", "post", "layout")}
    state = {
        model_id: {
            "model_name": "HBoxModel",
            "state": {
                "children": [f"IPY_MODEL_{ids[k]}" for k in ("desc", "bar", "post")],
                "layout": f"IPY_MODEL_{ids['layout']}",
            },
        },
        ids["desc"]: {"model_name": "HTMLModel", "state": {"value": desc}},
        ids["bar"]: {
            "model_name": "FloatProgressModel",
            "state": {"min": 0.0, "max": 4.0, "value": value, "bar_style": "success"},
        },
        ids["post"]: {"model_name": "HTMLModel", "state": {"value": " 4/4 [00:01&lt;00:00]"}},
        ids["layout"]: {"model_name": "LayoutModel", "state": {"visibility": visibility}},
    }
    return state


def make_notebooks(folder):
    folder.mkdir()
    view = {"model_id": "shown", "version_major": 2, "version_minor": 0}
    hidden = {"model_id": "gone", "version_major": 2, "version_minor": 0}
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Attention"),
            new_code_cell(
                "head_view(att, tokens)",
                outputs=[
                    new_output(
                        "display_data", {"text/html": CDN_REQUIRE, "text/plain": "<IPython.core.display.HTML object>"}
                    ),
                    new_output("display_data", {"text/html": '<div id="bertviz-test"></div>'}),
                    new_output("display_data", {"application/javascript": BERTVIZ_JS}),
                ],
            ),
            new_code_cell(
                "plt.show()", outputs=[new_output("display_data", {"image/png": PNG, "text/plain": "<Figure>"})]
            ),
            new_code_cell(
                "for _ in tqdm(...): pass",
                outputs=[
                    new_output(
                        "display_data", {"application/vnd.jupyter.widget-view+json": view, "text/plain": "fold: 0%"}
                    ),
                    new_output(
                        "display_data", {"application/vnd.jupyter.widget-view+json": hidden, "text/plain": "scan: 0%"}
                    ),
                ],
            ),
        ]
    )
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "version_major": 2,
            "version_minor": 0,
            "state": {**widget_state("shown", "fold: 100%", 4.0), **widget_state("gone", "scan: 100%", 4.0, "hidden")},
        }
    }
    nbformat.write(nb, folder / "06_attention.ipynb")
    plain = new_notebook(cells=[new_code_cell("plt.show()", outputs=[new_output("display_data", {"image/png": PNG})])])
    nbformat.write(plain, folder / "01_data.ipynb")
    nbformat.write(plain, folder / "notes.ipynb")  # not NN_*: skipped


def test_export_is_offline_self_contained_and_deterministic(tmp_path, capsys):
    make_notebooks(tmp_path / "in")
    assert export_html.main([str(tmp_path / "in"), str(tmp_path / "a")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "01_data.html" in lines[0] and "06_attention.html" in lines[1]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["01_data.html", "06_attention.html"]
    page = (tmp_path / "a" / "06_attention.html").read_text(encoding="utf-8")

    # nothing is loaded from the network: no remote <script src>, no <link href=http...>
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "require.min.js" not in page.split("<body", 1)[1]  # the bertviz tag is gone
    assert "widget-state+json" not in page and "embed-amd" not in page

    # the vendored libraries are inlined once, in <head>, d3 and jQuery before require.js, then the shim
    head = page.split("<body", 1)[0]
    positions = []
    for rel in export_html.VENDORED_JS:
        code = (export_html.VENDOR / rel).read_text(encoding="utf-8").rstrip()
        assert page.count(code) == 1 and head.count(code) == 1, rel
        positions.append(head.index(code))
    positions.append(head.index(export_html.AMD_SHIM))
    assert positions == sorted(positions)
    assert head.index(export_html.AMD_SHIM) < len(head) and page.count("define('d3'") == 1

    # the bertviz script itself is kept, the PNG is embedded, tqdm bars are static HTML
    assert "requirejs(['jquery', 'd3']" in page
    assert f"data:image/png;base64,{PNG}" in page
    # figures keep their saved size (their 8-pt text is not scaled down); wide ones scroll
    assert ".jp-RenderedImage img { max-width: none !important; }" in head and 'class="jp-RenderedImage' in page
    assert "fold: 100%" in page and 'role="progressbar"' in page and "scan: 100%" not in page

    # a page without script outputs gets no libraries
    assert "data-vendored" not in (tmp_path / "a" / "01_data.html").read_text(encoding="utf-8")

    # deterministic: a second export is byte-identical
    assert export_html.main([str(tmp_path / "in"), str(tmp_path / "b")]) == 0
    for name in ("01_data.html", "06_attention.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: (p / "empty").mkdir() or p / "empty"])
def test_no_notebooks_is_one_error_line_and_exit_2(tmp_path, capsys, make):
    folder = make(tmp_path)
    assert export_html.main([str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0]
    assert not (tmp_path / "out").exists()


def test_the_page_shows_the_injected_parameters_not_the_defaults():
    nb = new_notebook(
        cells=[
            new_code_cell('profile = "cpu"', metadata={"tags": ["parameters"]}),
            new_code_cell('profile = "smoke"', metadata={"tags": ["injected-parameters"]}),
            new_code_cell("print(profile)"),
        ]
    )
    assert export_html.drop_overridden_defaults(nb) == 1
    assert [c.source for c in nb.cells] == ['profile = "smoke"', "print(profile)"]
    plain = new_notebook(cells=[new_code_cell('profile = "cpu"', metadata={"tags": ["parameters"]})])
    assert export_html.drop_overridden_defaults(plain) == 0 and len(plain.cells) == 1  # not run by papermill: kept
