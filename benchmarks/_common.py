"""Shared helpers of the benchmark scripts: the machine's name, timing, sampling + scoring, and
recording a result (a JSON file under ``benchmarks/results/`` plus a row in ``benchmarks/RESULTS.md``).

Every script takes ``--smoke`` (seconds, used by CI: it checks that the script runs, not its numbers)
and writes nothing into ``RESULTS.md`` in smoke mode unless ``--record`` is given.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"
PRECISIONS = ("fp32", "bf16")  # of a sampler's network evaluations (draw_samples)


def positive_int(text: str) -> int:
    """An argparse type: a positive integer, or an error that repeats what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_int_list(text: str, what: str) -> list[int]:
    """Parse ``"1000,50,20"`` into positive ints (duplicates dropped), or raise an argparse error naming ``what``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive {what}, got {text!r}")
    return list(dict.fromkeys(values))


def existing_dir(text: str) -> str:
    """An argparse type: a folder that exists (for --data-dir)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder (it should hold MNIST/raw or the IDX files)")
    return text


def add_run_flags(parser: argparse.ArgumentParser, data: bool = True) -> None:
    """--device, --data-dir, --smoke and --record: the flags of every script that trains on MNIST (``data=False``:
    no --data-dir, for a script that reads no MNIST)."""
    from ddpm_helpers.train import DEVICES

    parser.add_argument("--device", choices=DEVICES, default="auto")
    if data:
        parser.add_argument("--data-dir", type=existing_dir, default=None, metavar="DIR",
                            help="folder with MNIST (default: $DDPM_DATA_DIR or the package's search order)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI (writes no RESULTS.md rows)")
    parser.add_argument("--record", action="store_true", help="write RESULTS.md rows even in smoke mode")


def parse_run_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, torch.device]:
    """Parse the command line; returns (args, device). ``args.data_dir`` falls back to $DDPM_DATA_DIR."""
    from ddpm_helpers.train import select_device

    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
    except ValueError as err:
        parser.error(f"argument --device: {err}")
    if hasattr(args, "data_dir"):
        args.data_dir = args.data_dir or os.environ.get("DDPM_DATA_DIR")
    return args, device


def load_training_data(args: argparse.Namespace, device: torch.device, smoke_limit: int = 2000):
    """(images, labels, seconds): MNIST's training set on ``device`` (the first ``smoke_limit`` images with
    --smoke, which may also fall back to the shipped subset). Without the data: the message, and exit status 2."""
    from ddpm_helpers.data import DataNotFoundError, load_mnist

    try:
        with Timer(device) as timer:
            images, labels = load_mnist("train", args.data_dir, allow_subset=args.smoke,
                                        limit=smoke_limit if args.smoke else None, device=device)
    except DataNotFoundError as err:
        print(f"error: {err} (or pass --data-dir)", file=sys.stderr)
        raise SystemExit(2) from None
    return images, labels, timer.seconds


def machine() -> str:
    """A short description of where this runs: :func:`ddpm_helpers.course.machine_name`."""
    from ddpm_helpers.course import machine_name

    return machine_name()


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """``with Timer(device) as t: ...`` then ``t.seconds`` (synchronises CUDA before reading the clock)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        return False


def command_line() -> str:
    """The command that runs this script again, each argument quoted for a shell where it needs it."""
    script = (str(Path(sys.argv[0]).relative_to(HERE.parent)) if Path(sys.argv[0]).is_absolute()
              and HERE.parent in Path(sys.argv[0]).parents else sys.argv[0])
    return "python " + shlex.join([script, *sys.argv[1:]])


def command_cell(command: str, stopped: str | None = None) -> str:
    """The command column of a RESULTS.md row: the command, and whether it was stopped early (see StopEarly)."""
    cell = f"`{command}`"
    return cell if stopped is None else f"{cell} (stopped early by {stopped}; the rows it finished)"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the script was, like Ctrl-C."""


class StopEarly:
    """``with StopEarly() as stop:`` around a benchmark's measuring, so that a stop keeps what was measured.

    SIGTERM (sent by ``timeout``, hence by on_device.sh's ``CMD_LIMIT``, and by job schedulers) and Ctrl-C end
    the block instead of the script; the script then records the rows it finished, marked as stopped early.
    (On a lent GPU, a command that outlasts its time limit would otherwise bring back nothing at all.) Each
    script adds a row to its results only once the row is complete, so no half-measured row is recorded.
    Afterwards ``stop.reason`` is ``"SIGTERM"`` or ``"Ctrl-C"`` (None when the block ran to its end) and
    ``stop.exit_code`` is 130 after a stop (else 0). SIGTERM's own handler is back, except after a SIGTERM: then
    further SIGTERMs are ignored, so that the rows are recorded. ``timeout`` signals its child and then the child's
    process group, so a python run as ``bash -c "python ..."`` (bash execs it) gets SIGTERM twice; the second used to
    end the script in the middle of recording (or escape from ``__exit__``), and the stop lost everything.
    (``timeout --kill-after`` still ends a script that hangs.)
    """

    def __enter__(self) -> "StopEarly":
        self.reason: str | None = None
        self._previous = None
        if threading.current_thread() is threading.main_thread():  # only there can Python handle signals
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    @staticmethod
    def _on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: see the class docstring
        raise _Terminated

    def __exit__(self, exc_type, exc, tb) -> bool:
        stopped_by_sigterm = exc_type is not None and issubclass(exc_type, _Terminated)
        if self._previous is not None and not stopped_by_sigterm:
            signal.signal(signal.SIGTERM, self._previous)
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            return False
        self.reason = "SIGTERM" if issubclass(exc_type, _Terminated) else "Ctrl-C"
        print(f"\nstopped early ({self.reason}): recording what was finished", flush=True)
        return True

    @property
    def exit_code(self) -> int:
        return 0 if self.reason is None else 130


def record(name: str, result: dict, row: str | None, *, smoke: bool, force: bool = False,
           stopped: str | None = None) -> Path:
    """Write ``result`` (plus date, machine, command, versions) to ``results/<name>.json`` and append ``row``
    (one Markdown table row, or several lines) under the ``## <name>`` heading of ``RESULTS.md``.

    In smoke mode the JSON goes to ``results/smoke/`` and nothing is appended unless ``force``. Prints the
    row(s) and ``wrote <path>`` (the tests read the path from that line). ``stopped`` (a :class:`StopEarly`'s
    reason) is kept in the JSON as ``stopped_early``; an empty ``row`` appends nothing.
    """
    from ddpm_helpers.train import library_versions

    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    full = {"name": name, "date": stamp, "machine": machine(), "command": command_line(),
            "versions": library_versions(), "smoke": smoke, "stopped_early": stopped, **result}
    folder = RESULTS_DIR / ("smoke" if smoke else "")
    folder.mkdir(parents=True, exist_ok=True)
    tag = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{name}-{tag}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(full, indent=1) + "\n")
    tmp.replace(path)
    row = row or None
    if row is not None and (not smoke or force):
        _append_row(name, row)
    if row is not None:
        print(row)
    print(f"wrote {path}")
    return path


def _append_row(section: str, row: str, results_md: Path | None = None) -> None:
    """Add ``row`` to the ``## <section>`` part of RESULTS.md (earlier rows are kept).

    A table row goes right after the last line of the section's table with as many columns (prose that follows the
    table stays below it); anything else, or a row no table fits, goes at the end of the section.
    """
    results_md = results_md or RESULTS_MD
    text = results_md.read_text()
    heading = f"\n## {section}\n"
    if heading not in text:
        raise KeyError(f"RESULTS.md has no section '## {section}'; add its heading and table header first")
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt == -1 else nxt
    lines = text[start:end].rstrip("\n").split("\n")
    new = row.rstrip("\n").split("\n")
    at = len(lines)
    if new[0].startswith("| "):
        columns = new[0].count(" | ")
        in_table = False  # inside a table whose header has as many columns as the row
        for i, line in enumerate(lines):
            if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
                in_table = line.count(" | ") == columns  # a header line, then its |---| line
            elif not line.startswith("|"):
                in_table = False
            if in_table and line.startswith("|"):
                at = i + 1
    section_text = "\n".join(lines[:at] + new + lines[at:]) + "\n"
    tmp = results_md.with_suffix(".tmp")
    tmp.write_text(text[:start] + section_text + ("\n" + text[end:].lstrip("\n") if nxt != -1 else ""))
    tmp.replace(results_md)


def markdown_row(cells: list[str]) -> str:
    """One Markdown table row of ``cells`` (a ``|`` inside a cell is escaped, so it cannot split the cell)."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def score(images: torch.Tensor, labels: torch.Tensor | None = None, data_dir: str | None = None) -> dict:
    """The package's metrics for (N, 1, 28, 28) images in [-1, 1] (see ddpm_helpers.metrics.evaluate_samples)."""
    from ddpm_helpers.metrics import evaluate_samples

    return evaluate_samples(images.float().cpu().clamp(-1, 1), None if labels is None else labels.cpu(), root=data_dir)


def draw_samples(model, schedule, config, n: int, method: str, steps: int | None, device, *,
                 guidance: float = 1.0, eta: float = 0.0, batch: int = 500,
                 precision: str = "fp32") -> tuple[torch.Tensor, float]:
    """``n`` images (on the CPU) from a course model and the seconds it took, in batches of ``batch``.

    A class-conditional model is asked for each digit in turn, with classifier-free guidance ``guidance``;
    ``eta`` is DDIM's noise level (0: deterministic). ``precision="bf16"`` runs the network under bf16
    autocast; the sampler's own arithmetic (the update of x_t) stays in fp32 (``sample`` casts the output).
    """
    from ddpm_helpers.sampling import sample

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    out = []
    with Timer(device) as timer, torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, n, batch):
            m = min(batch, n - start)
            y = (torch.arange(start, start + m) % 10).to(device) if config.class_conditional else None
            out.append(sample(model, schedule, m, method=method, steps=steps, eta=eta, prediction=config.prediction,
                              y=y, guidance_scale=guidance if y is not None else 1.0, device=device))
    return torch.cat([x.float().cpu() for x in out]), timer.seconds
