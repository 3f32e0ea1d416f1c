"""Execute a notebook top to bottom, saving it after every cell, with each cell's wall time.

    python scripts/run_notebook.py notebooks/05_training.ipynb --out /tmp/run/05_training.ipynb

Unlike ``jupyter nbconvert --execute``, which writes the executed notebook only at its end, this keeps
whatever ran when the run is stopped (a time limit, Ctrl-C): the output file always holds the cells
executed so far, with their outputs, and ``metadata.run_notebook`` records each code cell's seconds,
the total, the machine and whether the run finished. Warnings printed under a cell (``...Warning: message``
on stderr) are listed in ``metadata.run_notebook.warnings`` and summed up at the end: CI fails a cell that warns in
smoke mode (the repository's conftest.py), and this shows the ones of a full run, whose code paths (a GPU's among
them) CI never takes; they do not change the exit status. The kernel runs in the notebook's folder, as in
Jupyter. Exit status: 0 when every cell ran, 1 when a cell failed (the error is in the output file and
on stderr), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

WARNING_LINE = re.compile(r"\b\w*Warning: [^\r\n]*")  # a progress bar may come before it on its line


def printed_warnings(cell) -> list[str]:
    """The lines ``SomeWarning: message`` that a code cell printed on stderr (the warnings module's format)."""
    return [match.group(0)[:300] for output in cell.get("outputs", [])
            if output.get("output_type") == "stream" and output.get("name") == "stderr"
            for match in WARNING_LINE.finditer(output.get("text", ""))]


def machine() -> str:
    try:
        import torch

        from ddpm_helpers.course import machine_name
    except ImportError:  # the runner itself needs neither torch nor the package
        return platform.platform()
    return f"{machine_name()}, torch {torch.__version__}"


def run(path: Path, out: Path, kernel: str = "python3") -> int:
    nb = nbformat.read(path, as_version=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = {"notebook": path.name, "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "finished": False, "cells": [], "seconds": 0.0, "warnings": []}
    start = time.perf_counter()
    cell_start = {}

    def save():
        log["seconds"] = round(time.perf_counter() - start, 2)
        nb.metadata["run_notebook"] = log  # (a NotebookNode stores a converted copy: set it again each time)
        tmp = out.with_name(out.name + ".tmp")
        nbformat.write(nb, tmp)
        tmp.replace(out)  # atomic: a stopped run never leaves half a file

    def on_start(cell, cell_index):
        cell_start[cell_index] = time.perf_counter()

    def on_done(cell, cell_index, execute_reply):
        seconds = time.perf_counter() - cell_start.pop(cell_index, start)
        first_line = cell.source.splitlines()[0][:80] if cell.source else ""
        log["cells"].append({"index": cell_index, "seconds": round(seconds, 3), "first_line": first_line})
        log["warnings"] += [{"index": cell_index, "warning": line} for line in printed_warnings(cell)]
        save()

    def report_warnings():
        if log["warnings"]:
            print(f"{path.name}: {len(log['warnings'])} warning(s) printed under cells:", file=sys.stderr)
            for w in log["warnings"]:
                print(f"  cell {w['index']}: {w['warning']}", file=sys.stderr)

    # A time limit's SIGTERM: before the cells run, this handler keeps what there is. While they run, nbclient's own
    # handler takes its place (the kernel runs in a session of its own, so the signal never reaches it): nbclient
    # shuts the kernel down, client.execute() raises, and the second except below saves the cells that ran.
    def stop(signum, frame):
        save()
        print(f"{path.name}: stopped after {len(log['cells'])} code cells, {log['seconds']:.1f} s -> {out}",
              file=sys.stderr)
        report_warnings()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    client = NotebookClient(nb, timeout=None, kernel_name=kernel, resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=on_start, on_cell_executed=on_done)
    save()
    try:
        client.execute()
    except CellExecutionError as error:
        save()
        print(str(error)[-4000:], file=sys.stderr)
        return 1
    except Exception as error:  # stopped by a time limit, or the kernel died (out of memory): keep what ran
        save()
        print(f"{path.name}: the run broke off after {len(log['cells'])} code cells, {log['seconds']:.1f} s (a time "
              f"limit, or the kernel died; {type(error).__name__}: {error}) -> {out}", file=sys.stderr)
        return 1
    finally:
        report_warnings()
    log["finished"] = True
    save()
    print(f"{path.name}: {len(log['cells'])} code cells in {log['seconds']:.1f} s -> {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, required=True, metavar="PATH", help="where the executed notebook goes")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    if not args.notebook.is_file() or args.notebook.suffix != ".ipynb":
        parser.error(f"notebook must be an existing .ipynb file, got {str(args.notebook)!r}")
    if args.out.resolve() == args.notebook.resolve():
        parser.error("--out must not be the notebook itself (notebooks are committed without outputs)")
    return run(args.notebook, args.out, args.kernel)


if __name__ == "__main__":
    sys.exit(main())
