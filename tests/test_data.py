"""MNIST loading: the offline copy, md5 checks, the shipped subset, and the no-data message."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from ddpm_helpers.data import DataCorruptError, DataNotFoundError, find_mnist, load_mnist, read_idx, to_uint8


def test_full_mnist_from_the_offline_copy(data_dir):
    x, y = load_mnist("test", data_dir, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x_train, y_train = load_mnist("train", data_dir, download=False, limit=100)
    assert x_train.shape == (100, 1, 28, 28) and y_train.shape == (100,)


def test_environment_variable_is_a_search_location(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_DATA_DIR", data_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert find_mnist("test") is not None


def _copy_test_files(data_dir, dest: Path) -> Path:
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(Path(data_dir) / "MNIST" / "raw" / name, raw / name)
    return raw


def test_uncompressed_files_are_read_too(data_dir, tmp_path):
    raw = _copy_test_files(data_dir, tmp_path)
    for gz in raw.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    x, _ = load_mnist("test", tmp_path, download=False, limit=5)
    assert x.shape == (5, 1, 28, 28)


def test_corrupted_file_is_caught_by_md5_and_never_used(data_dir, tmp_path):
    raw = _copy_test_files(data_dir, tmp_path)
    path = raw / "t10k-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[5000] ^= 0xFF  # flip one pixel
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataCorruptError, match="md5 of the uncompressed content"):
        load_mnist("test", tmp_path, download=False)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataCorruptError, match="not a valid gzip"):
        load_mnist("test", tmp_path, download=False)


def test_a_damaged_unpacked_file_falls_back_to_the_gz_beside_it(data_dir, tmp_path):
    """torchvision keeps both in raw/; an unpacking cut short leaves a truncated file that the search finds first.
    The intact .gz beside it is read instead, with a warning naming the damaged file; with no intact .gz, the
    damaged file's own error stands."""
    raw = _copy_test_files(data_dir, tmp_path)
    packed = raw / "t10k-images-idx3-ubyte.gz"
    unpacked = raw / "t10k-images-idx3-ubyte"
    unpacked.write_bytes(gzip.decompress(packed.read_bytes())[:100_000])  # cut short
    with pytest.warns(UserWarning, match="t10k-images-idx3-ubyte: md5 .* Read t10k-images-idx3-ubyte.gz beside it"):
        x, _ = load_mnist("test", tmp_path, download=False)
    assert x.shape == (10000, 1, 28, 28)
    packed.write_bytes(b"not gzip at all")
    with pytest.raises(DataCorruptError, match="t10k-images-idx3-ubyte: md5 of the uncompressed content"):
        load_mnist("test", tmp_path, download=False)


def test_no_data_and_no_network_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("DDPM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as err:
        load_mnist("train", tmp_path / "empty", download=False)
    message = str(err.value)
    assert "root=" in message and "DDPM_DATA_DIR" in message and "download" in message
    assert "allow_subset=True" in message


def test_shipped_subset_is_used_only_when_allowed_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("DDPM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning, match="subset shipped with the package"):
        x, y = load_mnist("train", tmp_path / "empty", allow_subset=True, download=False)
    assert x.shape == (5000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [500] * 10  # stratified
    with pytest.warns(UserWarning, match="subset"):
        x_test, y_test = load_mnist("test", tmp_path / "empty", allow_subset=True, download=False)
    assert torch.bincount(y_test).tolist() == [100] * 10


def test_subset_images_are_real_mnist_images(data_dir, tmp_path, monkeypatch):
    import numpy as np
    from importlib import resources

    with resources.files("ddpm_helpers.assets").joinpath("mnist_subset.npz").open("rb") as fh:
        subset = dict(np.load(fh))
    full, labels = load_mnist("train", data_dir, download=False)
    idx = torch.from_numpy(subset["train_source_index"][:50].astype("int64"))
    assert torch.equal(to_uint8(full[idx])[:, 0], torch.from_numpy(subset["train_images"][:50]))
    assert torch.equal(labels[idx], torch.from_numpy(subset["train_labels"][:50].astype("int64")))


def test_read_idx_rejects_bad_headers():
    with pytest.raises(DataCorruptError):
        read_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataCorruptError, match="header promises"):
        read_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")


def test_damaged_gzip_body_and_truncated_header_are_named(data_dir, tmp_path):
    """A flipped byte inside the deflate stream raised a bare zlib.error, a cut header a bare struct.error
    (review, 2026-12-04): both now say which file is broken."""
    raw = _copy_test_files(data_dir, tmp_path)
    path = raw / "t10k-images-idx3-ubyte.gz"
    content = bytearray(path.read_bytes())
    for i in range(200, 260):
        content[i] ^= 0x5A  # damage the compressed body, not the gzip header
    path.write_bytes(bytes(content))
    with pytest.raises(DataCorruptError, match=f"{path.name} is not a valid gzip file"):
        load_mnist("test", tmp_path, download=False)
    with pytest.raises(DataCorruptError, match="is truncated: its header promises 3 dimensions"):
        read_idx(b"\x00\x00\x08\x03\x00\x00", "cut.idx")


def test_load_mnist_argument_checks(data_dir, tmp_path):
    with pytest.raises(TypeError, match="allow_subset must be True or False, got 'no'"):
        load_mnist("test", data_dir, allow_subset="no")
    with pytest.raises(TypeError, match="verify must be True or False"):
        load_mnist("test", data_dir, verify="no")
    with pytest.raises(TypeError, match="root must be None or a folder"):
        load_mnist("test", 123)
    with pytest.warns(UserWarning, match="limit=20000, but the test images found number only 10000"):
        x, _ = load_mnist("test", data_dir, limit=20000)
    assert len(x) == 10000


def test_a_root_without_mnist_is_reported_when_another_copy_is_used(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_DATA_DIR", data_dir)
    with pytest.warns(UserWarning, match="holds no MNIST test files; using"):
        x, _ = load_mnist("test", tmp_path, download=False, limit=3)
    assert x.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("bad,error,words", [
    (torch.tensor([0, 128, 255], dtype=torch.uint8), TypeError, "images must have a floating-point dtype"),
    (torch.tensor([0.0, float("nan")]), ValueError, "images contains 1 NaN"),
    ([0.0, 1.0], TypeError, "images must be a torch.Tensor"),
])
def test_to_uint8_refuses_what_is_not_images_in_minus_one_one(bad, error, words):
    with pytest.raises(error, match=words):
        to_uint8(bad)
