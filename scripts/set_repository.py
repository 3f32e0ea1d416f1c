"""Rewrite every notebook's "Open in Colab" badge and Colab install line from ddpm_helpers.course.

A fork edits COURSE_REPOSITORY (and COURSE_BRANCH) in src/ddpm_helpers/course.py, then runs:

    python scripts/set_repository.py

tests/test_notebooks.py checks that every notebook agrees with the configured repository.
"""

import argparse
import re
from pathlib import Path

import nbformat

from ddpm_helpers.course import colab_badge_url, pip_install_spec

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/[^)]*\)")
INSTALL = re.compile(r'%pip install -q "ddpm_helpers @ git\+[^"]*"')


def expected_badge(name: str) -> str:
    return f"({colab_badge_url(name)})"


def expected_install() -> str:
    return f'%pip install -q "{pip_install_spec()}"'


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help explains
    changed = 0
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = [cell.source for cell in nb.cells]
        for cell in nb.cells:
            cell.source = BADGE.sub(lambda _: expected_badge(path.name), cell.source)
            cell.source = INSTALL.sub(lambda _: expected_install(), cell.source)
        if [cell.source for cell in nb.cells] != before:  # leave agreeing notebooks untouched
            nbformat.write(nb, path)
            print(f"updated {path.name}")
            changed += 1
    print(f"{changed} notebook(s) updated for {colab_badge_url('NN.ipynb').rsplit('/blob/', 1)[0]}")


if __name__ == "__main__":
    main()
