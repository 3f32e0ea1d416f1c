"""MNIST as tensors in [-1, 1], read from the four standard IDX files and checked by md5.

Where the files are looked for, in order:

1. the ``root`` argument;
2. the environment variable ``DDPM_DATA_DIR``;
3. the cache folder ``~/.cache/ddpm_helpers`` (or ``$XDG_CACHE_HOME/ddpm_helpers``);
4. a download by torchvision into that cache, when the machine is online (as on Colab).

In each folder the files may sit directly, in ``raw/`` or in ``MNIST/raw/`` (torchvision's layout),
gzip-compressed or not. Their *uncompressed* bytes must match the published md5 sums, so a
corrupted file is never used silently.

With ``allow_subset=True``, a small stratified subset that ships inside the package (5,000 training
and 1,000 test images) is used when none of the above works: smoke runs, tests and the CLI demo
then run offline anywhere. A warning says so (Python shows a warning once per line of code that
triggers it, so a loop that loads the subset again does not repeat it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ._validate import (check_bool, check_available_device, check_choice, check_int, check_path, check_tensor,
                        refuse_byte_pixels)

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MD5 = {  # of the uncompressed files, as published with MNIST
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SUBSET_FILE = "mnist_subset.npz"


class DataNotFoundError(FileNotFoundError):
    """MNIST could not be found, downloaded, or (if allowed) replaced by the shipped subset."""


class DataCorruptError(ValueError):
    """An MNIST file exists but its content does not match the published md5 sum."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ddpm_helpers"


def read_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse the IDX format (LeCun's MNIST files): a magic number, the dims, then unsigned bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of an IDX file (path.read_bytes(), or gzip.decompress(...) for a "
                        f".gz), got {type(data).__name__}")
    if len(data) < 4:
        raise DataCorruptError(f"{name} is too short to be an IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataCorruptError(f"{name} is not an unsigned-byte IDX file (bad magic number)")
    if len(data) < 4 + 4 * ndim:
        raise DataCorruptError(f"{name} is truncated: its header promises {ndim} dimensions ({4 + 4 * ndim} bytes), "
                               f"but the file has only {len(data)} bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataCorruptError(f"{name} holds {body.size} bytes of data, but its header promises shape {shape}")
    return body.reshape(shape)


def _find_file(folder: Path, name: str) -> Path | None:
    for sub in ("", "raw", "MNIST/raw"):
        for candidate in (folder / sub / name, folder / sub / (name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _read_verified(path: Path, name: str, verify: bool) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged compressed body
            raise DataCorruptError(f"{path} is not a valid gzip file ({err}); delete it and provide MNIST again") from None
    if verify:
        digest = hashlib.md5(raw).hexdigest()
        if digest != MD5[name]:
            raise DataCorruptError(
                f"{path}: md5 of the uncompressed content is {digest}, expected {MD5[name]}. "
                "The file is corrupted or not the original MNIST; delete it and provide MNIST again."
            )
    return read_idx(raw, str(path))


def _read_found(path: Path, name: str, verify: bool) -> np.ndarray:
    """:func:`_read_verified`, falling back to the ``.gz`` beside a damaged unpacked file (torchvision keeps both in
    ``raw/``; an unpacking cut short leaves the unpacked one truncated, and the search finds it first)."""
    try:
        return _read_verified(path, name, verify)
    except DataCorruptError as err:
        packed = path.with_name(path.name + ".gz")
        if path.suffix == ".gz" or not packed.is_file():
            raise
        try:
            array = _read_verified(packed, name, verify)
        except DataCorruptError:
            raise err from None
        warnings.warn(f"{err} Read {packed.name} beside it instead; delete the damaged file.", stacklevel=3)
        return array


def _search_folders(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    folders = []
    if root is not None:
        folders.append(("root argument", Path(root)))
    if os.environ.get("DDPM_DATA_DIR"):
        folders.append(("DDPM_DATA_DIR", Path(os.environ["DDPM_DATA_DIR"])))
    folders.append(("cache", cache_dir()))
    return folders


def _try_download(split: str) -> bool:
    """Let torchvision fetch MNIST into the cache (works online, e.g. on Colab). False when offline."""
    try:
        from torchvision.datasets import MNIST

        MNIST(str(cache_dir()), train=(split == "train"), download=True)
        return True
    except Exception:  # no network, a mirror down, ...: the caller reports all options at once
        return False


def _load_subset(split: str) -> tuple[np.ndarray, np.ndarray]:
    with resources.files("ddpm_helpers.assets").joinpath(SUBSET_FILE).open("rb") as fh:
        arrays = np.load(fh)
        return arrays[f"{split}_images"], arrays[f"{split}_labels"]


def find_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """Paths of the image and label files of ``split`` in the first folder that has both, else None.

    ``root``, when given, must be an existing folder: a mistyped path is refused rather than passed over (the search
    would go on to ``DDPM_DATA_DIR`` and the cache, and a run allowed the subset would quietly train on it).
    """
    check_choice("split", split, SPLITS)
    folder = check_path("root", root, "a folder", optional=True)
    if folder is not None and not folder.is_dir():
        raise NotADirectoryError(f"root must be an existing folder holding the MNIST IDX files, got {str(root)!r}, "
                                 + ("which is a file" if folder.exists() else "which does not exist"))
    images_name, labels_name = FILES[split]
    for _, folder in _search_folders(root):
        images, labels = _find_file(folder, images_name), _find_file(folder, labels_name)
        if images and labels:
            return images, labels
    return None


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    allow_subset: bool = False,
    download: bool = True,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: float32 (N, 1, 28, 28) in [-1, 1] and int64 (N,).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: a folder holding the IDX files (see the module docstring for the search order).
        allow_subset: fall back to the shipped subset (5,000 train / 1,000 test images) if no full copy
            can be found or downloaded, with a warning.
        download: try torchvision's download into the cache when no local copy is found.
        limit: keep only the first ``limit`` images (MNIST's order is already shuffled).
        device: where the returned tensors live (keeping all of MNIST on a GPU is only 188 MB).
        verify: check the md5 of the uncompressed files (on by default; ~0.1 s).
    """
    check_choice("split", split, SPLITS)  # root is checked by find_mnist, its first user
    for name, value in (("allow_subset", allow_subset), ("download", download), ("verify", verify)):
        check_bool(name, value)
    if limit is not None:
        check_int("limit", limit, min_value=1)
    device = check_available_device("device", device)
    images_name, labels_name = FILES[split]
    found = find_mnist(split, root)
    if found is not None and root is not None and Path(root) not in found[0].parents:
        warnings.warn(f"root {str(root)!r} holds no MNIST {split} files; using {found[0].parent} (found by the "
                      "search order: root, DDPM_DATA_DIR, the cache)", stacklevel=2)
    if found is None and download and _try_download(split):
        found = find_mnist(split, root)
    if found is not None:
        images = _read_found(found[0], images_name, verify)
        labels = _read_found(found[1], labels_name, verify)
    elif allow_subset:
        images, labels = _load_subset(split)
        warnings.warn(
            f"ddpm_helpers: full MNIST not found; using the small {split} subset shipped with the package "
            f"({len(labels)} images). Results will be weaker than with the full data set.",
            stacklevel=2,
        )
    else:
        tried = ", ".join(f"{label} ({path})" for label, path in _search_folders(root))
        raise DataNotFoundError(
            f"MNIST ({split}) not found. Looked in: {tried}; download "
            f"{'failed (offline?)' if download else 'disabled'}. Provide it in one of three ways: "
            "(1) pass root=<folder with the four MNIST IDX files>; "
            "(2) set the environment variable DDPM_DATA_DIR to that folder; "
            "(3) run once with a network connection so torchvision can download it into the cache. "
            "Or pass allow_subset=True to use the small subset shipped with the package."
        )
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataCorruptError(f"unexpected MNIST shapes: images {images.shape}, labels {labels.shape}")
    if limit is not None:
        if limit > len(labels):
            warnings.warn(f"limit={limit}, but the {split} images found number only {len(labels)}: using all "
                          f"{len(labels)}", stacklevel=2)
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.copy()).to(device=device).float().div_(127.5).sub_(1.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64)).to(device)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map images in [-1, 1] back to uint8 pixels in [0, 255] (clamping first)."""
    check_tensor("images", images, floating=True, finite=True)  # uint8 input is already pixels; NaN has no pixel
    refuse_byte_pixels("images", images)  # 0..255 as floats: all 255 after the clamp
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
