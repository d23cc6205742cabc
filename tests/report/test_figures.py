"""The report's figures are laid out, not just drawn: nothing outside the figure, no label on a title, no legend
on a bar, bar axes from 0, and every image in report.html / report.md has a sentence for a caption (issue 16,
item 9). `test_browser.py` checks the same page in a real Chromium."""

import json
import re

import pytest

from kdforge.report import plots

FORBIDDEN_CAPTION = re.compile(r"(^plots/|\.png$)")


def _overlap(a, b, slack=1.0):
    return a.x0 < b.x1 - slack and b.x0 < a.x1 - slack and a.y0 < b.y1 - slack and b.y0 < a.y1 - slack


def check_figure(fig):
    """Every problem this figure has, as sentences (empty: none)."""
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    tight, frame = fig.get_tightbbox(renderer), fig.bbox_inches
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > frame.x1 + 0.01 or tight.y1 > frame.y1 + 0.01:
        problems.append(f"drawn outside the figure: {tight} vs {frame}")
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer) if ax.get_title() else None
        texts = [t for t in ax.texts if t.get_visible() and t.get_text()]
        for t in texts:
            box = t.get_window_extent(renderer)
            if title is not None and _overlap(box, title):
                problems.append(f"label {t.get_text()!r} overlaps the title {ax.get_title()!r}")
            if not (ax.bbox.x0 - 1 <= box.x0 and box.x1 <= ax.bbox.x1 + 1 and ax.bbox.y0 - 1 <= box.y0
                    and box.y1 <= ax.bbox.y1 + 1) and not ax.images:
                problems.append(f"label {t.get_text()!r} sticks out of its axes")
        if ax.get_ylabel():
            label = ax.yaxis.label.get_window_extent(renderer)
            for tick in ax.get_yticklabels(minor=False) + ax.get_yticklabels(minor=True):
                if tick.get_visible() and tick.get_text() and _overlap(label, tick.get_window_extent(renderer)):
                    problems.append(f"axis label {ax.get_ylabel()!r} overlaps tick label {tick.get_text()!r}")
        bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0 and p.get_width() > 0]
        if bars and ax.get_yscale() == "linear" and ax.get_ylim()[0] != 0 and not ax.images:
            problems.append(f"bar axes {ax.get_title()!r} start at {ax.get_ylim()[0]:.2f}, not 0")
        for other in fig.axes:
            legend = other.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for bar in bars:
                drawn = Bbox.intersection(bar.get_window_extent(renderer), ax.bbox)  # bars are clipped to axes
                if drawn is not None and _overlap(box, drawn, slack=2.0):
                    problems.append(f"legend of {other.get_title()!r} sits on a bar of {ax.get_title()!r}")
                    break
    return problems


@pytest.fixture
def checked_figures(monkeypatch):
    """Run the checks on every figure the report saves (before it is written and closed)."""
    found = {}
    original = plots._save

    def checking_save(fig, path):
        found[path.name] = check_figure(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", checking_save)
    return found


def test_every_report_figure_is_laid_out(tiny_run, checked_figures, tmp_path):
    from kdforge.report.run import regenerate_report

    out, _ = tiny_run
    regenerate_report(out)
    assert {"accuracy.png", "curves.png", "agreement.png", "reliability.png", "confusion.png",
            "cost.png"} <= set(checked_figures)
    assert {name: p for name, p in checked_figures.items() if p} == {}


def test_the_issue_figures_fail_the_check(checked_figures, tmp_path):
    """The check finds what issue 16 saw: a y-axis from 0.84, a legend on the bars, a label on the title."""
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    bars = ax.bar(["a", "b"], [0.86, 0.89], label="accuracy")
    ax.bar_label(bars, labels=["0.860", "0.890"], padding=3)
    ax.set_ylim(0.84, 0.89)
    ax.set_title("Accuracy")
    ax.legend(loc="lower right")
    problems = " ".join(check_figure(fig))
    plt.close(fig)
    assert "not 0" in problems and "sits on a bar" in problems
    assert "overlaps the title" in problems or "sticks out of its axes" in problems


def test_every_image_has_a_sentence_caption(tiny_run):
    out, _ = tiny_run
    html = (out / "report.html").read_text()
    figures = re.findall(r"<figure><img [^>]*alt=\"([^\"]*)\"[^>]*><figcaption>([^<]*)</figcaption></figure>", html)
    assert len(figures) == html.count("<img ") >= 6
    for alt, caption in figures:
        assert alt == caption and not FORBIDDEN_CAPTION.search(caption), caption
        assert caption[0].isupper() and caption.endswith(".") and len(caption.split()) >= 6, caption
    md = (out / "report.md").read_text()
    for caption, path in re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", md):
        assert caption.endswith(".") and not FORBIDDEN_CAPTION.search(caption), (caption, path)
    plotted = json.loads((out / "report.json").read_text())["plots"]
    assert all(p in md for p in plotted)
