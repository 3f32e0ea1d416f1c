"""Checkpoints that survive interruptions: atomic writes, a format version, the last K kept.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and read back
with ``torch.load(..., weights_only=True)``, so loading one never runs code. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the final name: a run killed
mid-write leaves the previous checkpoints untouched. Old checkpoints are pruned only after the new
one is safely in place.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ._validate import _show, check_device, check_int, check_path, device_available

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")  # 8 digits, more past step 99,999,999


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: truncated, corrupted, of another format, or made with another config."""


def _step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    """The file name of the checkpoint after ``step`` steps in ``folder``: ``ckpt_00001500.pt``."""
    step = check_int("step", step, min_value=0)
    return check_path("folder", folder, "a folder") / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first (by the step number in the name)."""
    folder = check_path("folder", folder, "a folder")
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name) and p.is_file()), key=_step_of)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_atomically(files: Mapping[str | os.PathLike, Callable[[BinaryIO], None]]) -> list[Path]:
    """Write a set of files whole and together: ``files`` maps each path to a function that writes the file's bytes
    to the open binary file it is given.

    Each file is written to a temporary file in its folder and flushed to disk; only when all of them are written
    do they replace their targets, one rename each. Ctrl-C and SIGTERM wait until the set is in place (in the main
    thread): the writing takes a second or so, and a stop inside torch.save's zip writer could surface as another
    error. A stopped run therefore leaves the earlier set or the new one, never a half-written file and never new
    weights beside an old card. Returns the paths, in order."""
    if not isinstance(files, Mapping) or not files:
        raise TypeError(f"files must be a non-empty dict of path -> writer, got {_show(files)}")
    targets = {}
    for path, write in files.items():
        path = check_path("path", path)
        if path.is_dir():  # os.replace would fail only after the whole file was written, naming the temporary file
            raise IsADirectoryError(f"path {str(path)!r} is a folder; give the file to write, such as "
                                    f"{str(path / 'ckpt.pt')!r}")
        if not callable(write):
            raise TypeError(f"the writer of {str(path)!r} must be a function of an open binary file, got "
                            f"{_show(write)}")
        targets[path] = write
    temporary = []
    try:
        with _signals_held():
            for path, write in targets.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
                temporary.append(tmp)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it open()'s usual mode
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            for tmp, path in zip(temporary, targets):
                os.replace(tmp, path)
    except BaseException:  # a writer's error, or the held Ctrl-C raised once the set is in place (nothing left then)
        for tmp in temporary:
            Path(tmp).unlink(missing_ok=True)
        raise
    return list(targets)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM received inside the block take effect when it ends (in the main thread; elsewhere, where
    Python cannot set handlers, a no-op). Python's handlers are swapped, not the signal mask: a signal sent to the
    process may be taken by any thread that does not block it (torch's worker threads among them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received, previous = [], {}

    def hold(signum, frame):
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        if previous[signum] not in (signal.SIG_IGN, None):  # None: set outside Python; an ignored signal stays so
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(signum, handler)
        for signum in received[:1]:  # now, as it would have then
            if callable(previous[signum]):
                previous[signum](signum, None)
            else:  # SIG_DFL: end the process as the signal would have
                signal.raise_signal(signum)


def save_atomically(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, whole or not at all (:func:`write_atomically`: temporary file, fsync, rename; a
    stopped run leaves no half-written file, and an earlier file at ``path`` stays until the new one is complete)."""
    return write_atomically({check_path("path", path): lambda fh: torch.save(obj, fh)})[0]   # a list: unhashable


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus ``format_version``) to ``path`` atomically (:func:`save_atomically`).

    Only what :func:`load_checkpoint` can read back goes in (``torch.load(weights_only=True)`` runs no code, so it
    reads tensors, numbers, strings, bytes, None, torch dtypes, devices and sizes, in lists, tuples, sets and dicts):
    anything else (a function, a ``torch.Generator``, a ``Path``) is refused before a byte is written, with its
    place in ``state`` named."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, such as Trainer.state_dict(), got {type(state).__name__}")
    where = _not_loadable("state", state)
    if where is not None:
        raise TypeError(f"{where} cannot go into a checkpoint: load_checkpoint reads with "
                        "torch.load(weights_only=True), which runs no code and so reads back only tensors, numbers, "
                        "strings, bytes, None, torch dtypes, devices and sizes, and lists, tuples, sets and dicts of "
                        "them. Convert it (str(path), a generator's get_state()) or leave it out. Nothing was written.")
    return save_atomically({**state, "format_version": FORMAT_VERSION}, path)


_LOADABLE = (torch.Tensor, str, int, float, complex, bool, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _not_loadable(name: str, value: Any) -> str | None:
    """The name of the first value inside ``value`` that ``torch.load(weights_only=True)`` would refuse
    (``state['fn'] (function)``), or None when it reads back whole."""
    if type(value) in (dict, OrderedDict):
        items = value.items()
    elif type(value) in (list, tuple, set):
        items = enumerate(value)
    else:
        return None if isinstance(value, _LOADABLE) else f"{name} ({type(value).__name__})"
    for key, item in items:
        found = (_not_loadable(f"{name} key {key!r}", key) if not isinstance(key, (str, int)) else None) \
            or _not_loadable(f"{name}[{key!r}]", item)
        if found is not None:
            return found
    return None


def _damaged(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is truncated or corrupted and cannot be read ({type(err).__name__}: {err}). "
                           "It was left in place; earlier checkpoints in the same folder are untouched.")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a clear :class:`CheckpointError` if it is unusable."""
    path = check_path("path", path, "a checkpoint file")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file; to read the newest checkpoint in it, "
                                "use latest_checkpoint(folder) (or the CLI's --run)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not (map_location is None or callable(map_location)
            or isinstance(map_location, (str, torch.device, dict))):  # torch.load's error would read as a bad file
        raise TypeError(f"map_location must be a device such as 'cpu' or 'cuda' (or None, a dict or a function, as "
                        f"torch.load takes), got {map_location!r}")
    if isinstance(map_location, (str, torch.device)):  # torch.load also takes a dict or a function: passed on
        device = check_device("map_location", map_location)
        if not device_available(device):  # torch.load's own error for an absent device reads like a damaged file
            raise ValueError(f"map_location={str(map_location)!r} is not available on this machine; use 'cpu'")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head and not (head == b"PK\x03\x04" or head[:1] == b"\x80"):  # torch.save's zip archive, or an old pickle
        raise CheckpointError(f"{path} is not a checkpoint: torch.save writes a zip archive, and this file begins "
                              f"with {head!r}; pass a ckpt_*.pt file that training wrote")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():  # a truncated pickle says "pickle data was truncated"
            raise _damaged(path, err) from None
        # a whole file, but holding objects that weights_only may not load; torch's message is a page long
        found = re.search(r"Unsupported global: ([^\n]*?)(?: was not an allowed global|$)", str(err), re.MULTILINE)
        detail = f"it holds {found.group(1).strip()}" if found else str(err).splitlines()[0]
        raise CheckpointError(
            f"{path} holds objects that torch.load(weights_only=True) refuses ({detail}). It was not written by "
            "this version of ddpm_helpers, or something not a plain number or string went into its config. "
            "It was left in place."
        ) from None
    except Exception as err:
        raise _damaged(path, err) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a ddpm_helpers checkpoint (no format_version)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']}, this ddpm_helpers reads format {FORMAT_VERSION}"
        )
    return state


def latest_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint in ``folder`` (None if there is none). An unreadable newer file is
    reported with a warning and skipped, never deleted."""
    for path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as err:
            warnings.warn(f"skipping unusable checkpoint: {err}", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None


def prune_checkpoints(folder: str | os.PathLike, keep_last: int, newest: str | os.PathLike | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` (at least 1) checkpoints; returns the deleted paths.

    ``newest`` is the checkpoint just written (as ``Trainer.save`` passes it): it is always kept, and only files
    of lower step numbers are counted and deleted. A file of a *higher* step number can exist after a resume
    past an unreadable checkpoint (``latest_checkpoint`` skips it); it must neither take one of the kept
    places nor push out the file just written, so it is left alone, as :func:`latest_checkpoint` promises.
    """
    keep_last = check_int("keep_last", keep_last, min_value=1)
    files = list_checkpoints(folder)
    if newest is not None:
        newest = check_path("newest", newest, "a checkpoint file")
        if not _NAME.match(newest.name):
            raise ValueError(f"newest must be a checkpoint file named like ckpt_00001500.pt, got {newest}")
        files = [p for p in files if _step_of(p) <= _step_of(newest)]
    old = files[:-keep_last]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def check_same_config(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointError` naming every setting whose saved value differs from the current one."""
    for name, value in (("saved", saved), ("current", current)):
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a config as a dict (TrainConfig.to_dict()), got {type(value).__name__}")
    if not isinstance(ignore, (tuple, list, set, frozenset)) or not all(isinstance(k, str) for k in ignore):
        hint = f" (for one name: ignore=({ignore!r},))" if isinstance(ignore, str) else ""
        raise TypeError(f"ignore must be a tuple of setting names, got {ignore!r}{hint}")
    keys = sorted((set(saved) | set(current)) - set(ignore))
    diffs = [
        f"{k}: checkpoint has {saved.get(k, '<missing>')!r}, now {current.get(k, '<missing>')!r}"
        for k in keys
        if _plain(saved.get(k)) != _plain(current.get(k))
    ]
    if diffs:
        raise CheckpointError(
            "the checkpoint was made with another configuration; resuming would mix two runs. Differences: "
            + "; ".join(diffs)
            + ". Use a new output folder or the checkpoint's settings (on the command line, --restart moves the "
            "old checkpoints aside and starts over)."
        )


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
