"""The README documents every profile key and the commands CI runs."""

from pathlib import Path

from sslterm.profile.schema import Profile

ROOT = Path(__file__).resolve().parents[1]


def test_every_profile_key_is_documented():
    readme = (ROOT / "README.md").read_text()
    for section, field in Profile.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        for key in sub or ():
            assert f"`{section}.{key}`" in readme, f"{section}.{key} missing from README"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "python -m pytest -q -n 2 --dist loadfile" in readme and "python -m pytest -q -n 2 --dist loadfile" in ci
    assert 'pip install -q -e ".[test]"' in ci and 'pip install -e ".[test]"' in readme


def test_every_command_is_in_the_commands_table():
    from sslterm.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Commands"):readme.index("## The terminal app")]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`sslterm {name}" in table or f"`{name} RUN" in table, name
