"""scripts/run_notebook.py: executes a notebook, saving it after every cell, and keeps what ran when a cell fails."""

import subprocess
import sys
from pathlib import Path

import nbformat

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_notebook.py"


def make_notebook(path, sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a test")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=180)


def test_cells_are_timed_and_a_failure_keeps_the_cells_before_it(tmp_path):
    source = tmp_path / "demo.ipynb"
    make_notebook(source, ["import os, time\nprint(os.getcwd())", "time.sleep(0.3)\nx = 41", "print(x + 1)",
                           "raise ValueError('boom')", "print('never')"])
    out = tmp_path / "out" / "demo.ipynb"
    result = run(source, "--out", out)
    assert result.returncode == 1 and "boom" in result.stderr
    nb = nbformat.read(out, as_version=4)
    log = nb.metadata["run_notebook"]
    assert not log["finished"] and [c["index"] for c in log["cells"]] == [1, 2, 3, 4]
    assert log["cells"][1]["seconds"] >= 0.3 and log["cells"][1]["first_line"] == "time.sleep(0.3)"
    assert nb.cells[1].outputs[0]["text"].strip() == str(tmp_path)   # the kernel runs in the notebook's folder
    assert nb.cells[3].outputs[0]["text"] == "42\n"
    assert nb.cells[4].outputs[0]["ename"] == "ValueError" and not nb.cells[5].outputs
    assert nbformat.read(source, as_version=4).cells[1].outputs == []   # the source notebook is untouched

    make_notebook(source, ["print('ok')"])
    result = run(source, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert nbformat.read(out, as_version=4).metadata["run_notebook"]["finished"] is True


def test_bad_arguments_are_named(tmp_path):
    result = run(tmp_path / "missing.ipynb", "--out", tmp_path / "o.ipynb")
    assert result.returncode == 2 and "missing.ipynb" in result.stderr and ".ipynb file" in result.stderr
    source = tmp_path / "same.ipynb"
    make_notebook(source, ["1"])
    result = run(source, "--out", source)
    assert result.returncode == 2 and "--out must not be the notebook itself" in result.stderr
