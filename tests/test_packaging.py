"""The package list in pyproject.toml names every package, so a wheel ships all of them."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts)
             for path in (ROOT / "cicd").rglob("__init__.py")}
    for name, directory in config["package-dir"].items():
        if name and (ROOT / directory / "__init__.py").is_file():
            found.add(name)
    assert listed == found
