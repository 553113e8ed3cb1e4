"""Results and run records in a notebook: HTML views, figures, and a metrics table."""

from __future__ import annotations

import base64
import html
import io
import sys

import pytest

from mi_ideas.errors import UsageError
from mi_ideas.runs import execute, load_run
from tests import test_report_planted


@pytest.fixture
def record(register_plugin, mi_ideas_host, tmp_path):
    register_plugin(test_report_planted, name="planted")
    done = execute("planted-effect", config={"effect": 1.5, "n": 5}, out=tmp_path,
                   host=mi_ideas_host, quiet=True)
    return load_run(done.path)


def _png(record):
    return (record.path / record.result.figures["units"]).read_bytes()


def test_a_result_renders_its_metrics_definitions_and_figures(record):
    page = record.result._repr_html_()
    for name, value in record.result.metrics.items():
        definition = html.escape(record.result.definitions[name])
        assert f"<td>{name}</td>" in page and definition in page
    assert ">1.5<" in page and ">5<" in page  # values as numbers, not reprs
    assert base64.b64encode(_png(record)).decode() in page
    # without a run directory there is nothing to embed, and nothing breaks
    bare = type(record.result)(metrics={"x": float("nan")}, definitions={"x": "not a number"})
    assert ">nan<" in bare._repr_html_() and "<img" not in bare._repr_html_()


def test_a_record_renders_the_answer_headlines_metrics_and_figures(record):
    page = record._repr_html_()
    assert "The treatment exceeds its control by 1.5 over 5 units." in page
    assert "treatment vs control" in page and "status complete" in page
    assert page.index("class='headlines'") < page.index("id='metrics'")
    assert base64.b64encode(_png(record)).decode() in page


def test_record_figure_gives_the_png_or_a_matplotlib_figure(record):
    png = record.figure("units")
    assert png == _png(record) and png._repr_png_() == png  # bytes, shown inline by Jupyter
    fig = record.figure("units", matplotlib=True)
    from matplotlib.figure import Figure
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    assert isinstance(fig, Figure)
    assert fig.axes[0].images[0].get_array().shape[:2] == (height, width)  # the same pixels
    with pytest.raises(UsageError, match=r"no figure named 'nope'; it has \['units'\]"):
        record.figure("nope")


def test_to_frame_gives_the_metrics_with_definitions(record, monkeypatch):
    frame = record.to_frame()
    assert list(frame.index) == list(record.result.metrics)
    assert frame.index.name == "metric" and list(frame.columns) == ["value", "definition"]
    assert frame.loc["difference", "value"] == pytest.approx(1.5)
    assert frame.loc["n_units", "definition"] == "number of independent units"
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas absent
    with pytest.raises(UsageError, match="needs pandas, which is not installed; `pip install pandas`"):
        record.to_frame()
