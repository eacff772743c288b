"""How often a single flipped bit in a dataset store goes unnoticed.

Copies a zarr store written by ``xasflow dataset`` (default: results/dataset/spectra.zarr), then
for each trial flips one random bit of one random file of the copy and opens it with
``open_dataset``. Each trial ends in one of three ways:

- refused: ``open_dataset`` raised ``DatasetSchemaError`` (checksum, chunk or schema check);
- identical: it opened and every variable, coordinate and attribute equals the original
  (a bit in compressed padding or unused metadata);
- silent: it opened with different data: the failure this check exists to prevent.

Prints the three counts and the silent fraction.
Usage: python benchmarks/corruption_sweep.py [STORE] [--trials 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

from xasflow.dataset.schema import DatasetSchemaError, open_dataset


def _flip_one_bit(store: Path, rng: random.Random) -> Path:
    files = sorted(path for path in store.rglob("*") if path.is_file() and path.stat().st_size > 0)
    target = rng.choice(files)
    data = bytearray(target.read_bytes())
    position = rng.randrange(len(data))
    data[position] ^= 1 << rng.randrange(8)
    target.write_bytes(bytes(data))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", default="results/dataset/spectra.zarr")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    original = open_dataset(args.store)
    rng = random.Random(args.seed)
    counts = {"refused": 0, "identical": 0, "silent": 0}
    silent_files = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.trials):
            copy = Path(scratch) / "copy.zarr"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(args.store, copy)
            flipped = _flip_one_bit(copy, rng)
            try:
                damaged = open_dataset(copy)
            except DatasetSchemaError:
                counts["refused"] += 1
                continue
            if damaged.identical(original):
                counts["identical"] += 1
            else:
                counts["silent"] += 1
                silent_files.append(str(flipped.relative_to(copy)))
    print(f"store {args.store}: {args.trials} single-bit flips")
    for outcome, count in counts.items():
        print(f"  {outcome:9s} {count:4d}")
    print(f"silent fraction {counts['silent'] / args.trials:.3f}")
    if silent_files:
        print("silent flips in: " + ", ".join(sorted(set(silent_files))))


if __name__ == "__main__":
    main()
