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


def test_readme_links_to_files_that_exist():
    import re

    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(((?:recipes|docs|benchmarks|src)/[^)#]+)\)", text):
        assert (ROOT / target).exists(), target


def test_recipes_shown_in_the_readme_validate():
    """Every YAML block of the README that is a whole recipe passes the schema and loss checks."""
    import re

    import yaml

    from kdforge.recipe import recipe_from_dict

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)]
    recipes = [b for b in blocks if isinstance(b, dict) and {"teacher", "student", "data", "losses"} <= set(b)]
    assert recipes, "the README shows no whole recipe"
    for data in recipes:
        recipe_from_dict(data)
