"""Build the small stratified MNIST subset shipped in the package (src/ddpm_helpers/assets/mnist_subset.npz).

500 training and 100 test images per digit, chosen with a fixed seed from the full, md5-verified
MNIST files, stored as uint8. MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0.

    python scripts/make_mnist_subset.py --root ../shared/data
"""

import argparse
from pathlib import Path

import numpy as np

from ddpm_helpers.checkpoint import write_atomically
from ddpm_helpers.data import FILES, _read_verified, find_mnist

PER_CLASS = {"train": 500, "test": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "src/ddpm_helpers/assets/mnist_subset.npz"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, per_class in PER_CLASS.items():
        found = find_mnist(split, args.root)
        if found is None:
            raise SystemExit(f"no MNIST {split} files under {args.root}")
        images = _read_verified(found[0], FILES[split][0], True)
        labels = _read_verified(found[1], FILES[split][1], True)
        index = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])
        index = rng.permutation(index)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[index], labels[index]
        arrays[f"{split}_source_index"] = index.astype(np.int32)
    write_atomically({args.out: lambda fh: np.savez_compressed(fh, **arrays)})  # a stop never truncates the file
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
