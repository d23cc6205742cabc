"""Docs stay in step with the registry and the recipes."""

from pathlib import Path

from kdforge.losses import LOSSES

ROOT = Path(__file__).resolve().parents[1]


def test_every_loss_has_a_row_in_methods_md():
    text = (ROOT / "docs" / "methods.md").read_text()
    for name in LOSSES.names():
        assert f"`{name}`" in text, name


def test_every_loss_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    for name in LOSSES.names():
        assert f"| `{name}` |" in text, name


def test_links_in_methods_md_exist():
    import re

    text = (ROOT / "docs" / "methods.md").read_text()
    for target in re.findall(r"\]\((\.\./[^)]+)\)", text):
        assert (ROOT / "docs" / target).resolve().exists(), target


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
