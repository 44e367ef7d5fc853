"""FrameIndex build speed and memory, measured side by side in one run.

    python bench/bench_index.py [--frames 140000] [--repeats 3] [--dir DIR]

1. Writes a BP4D-layout tree (AU_OCC CSVs with header 0..99, some 9s, and an empty image
   file per labelled frame, 3-digit names for M009-M018) of about ``--frames`` frames.
2. Times ``read_bp4d`` (parsing, validation, image matching) beside a plain pandas read of the
   same CSVs one at a time (``pd.read_csv`` per file, then ``pd.concat``), interleaved, best
   of ``--repeats``; then the peak memory of one more run of each, under tracemalloc (numpy
   reports its buffers to it).
3. Builds a 1M-frame x 23-AU FrameIndex (occurrence and intensity) and prints bytes per frame
   without and with the path strings.

Targets (issue #2): read_bp4d no slower than 1.5x pandas; under 200 bytes/frame sans paths.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from au_lightning.data import FrameIndex, read_bp4d

SUBJECTS = [f"F{i:03d}" for i in range(1, 24)] + [f"M{i:03d}" for i in range(1, 19)]
TASKS = [f"T{i}" for i in range(1, 9)]
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def write_tree(root: Path, frames: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    per_video = frames // (len(SUBJECTS) * len(TASKS))
    header = ",".join(str(i) for i in range(100))
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True, exist_ok=True)
    total = 0
    for subject in SUBJECTS:
        digits = 3 if subject >= "M009" and subject.startswith("M") else 4
        for task in TASKS:
            start = int(rng.integers(1, 900))
            numbers = np.arange(start, start + per_video)
            table = np.zeros((per_video, 100), dtype=np.int64)
            table[:, 0] = numbers
            cols = np.array(BP4D_AUS)
            table[:, cols] = rng.random((per_video, len(cols))) < 0.3
            table[:, cols] = np.where(rng.random((per_video, len(cols))) < 0.01, 9, table[:, cols])
            body = "\n".join(",".join(map(str, row)) for row in table.tolist())
            (occ / f"{subject}_{task}.csv").write_text(header + "\n" + body + "\n")
            folder = root / subject / task
            folder.mkdir(parents=True, exist_ok=True)
            for n in numbers.tolist():
                (folder / f"{n:0{digits}d}.jpg").touch()
            total += per_video
    return total


def pandas_read(root: Path):
    import pandas as pd

    files = sorted((root / "AUCoding" / "AU_OCC").glob("*.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def peak_memory(fn, *args) -> int:
    """Peak traced allocation of one call (a separate run: tracing slows the code)."""
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def memory_per_frame(n: int = 1_000_000, n_aus: int = 23) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(1000), n // 1000).astype(str)
    index = FrameIndex.from_columns(
        path=np.char.add(np.char.add(subjects, "/"), np.arange(n).astype(str)),
        subject=subjects,
        video=subjects,
        frame=np.arange(n),
        aus=range(1, n_aus + 1),
        occurrence=rng.integers(-1, 2, (n, n_aus)),
        intensity=rng.integers(-1, 6, (n, n_aus)),
    )
    return index.nbytes(include_paths=False) / n, index.nbytes() / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=140_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="reuse/keep the tree here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp) / "bp4d"
        if not (root / "AUCoding").is_dir():
            t0 = time.perf_counter()
            n = write_tree(root, args.frames)
            print(f"wrote {n} frames in {time.perf_counter() - t0:.1f} s to {root}")
        times: dict[str, list[float]] = {"pandas": [], "read_bp4d": []}
        for _ in range(args.repeats):
            frame, seconds = timed(pandas_read, root)
            times["pandas"].append(seconds)
            index, seconds = timed(read_bp4d, root)
            times["read_bp4d"].append(seconds)
        assert len(index) == len(frame), (len(index), len(frame))
        peaks = {
            "pandas": peak_memory(pandas_read, root),
            "read_bp4d": peak_memory(read_bp4d, root),
        }
        best = {k: min(v) for k, v in times.items()}
        print(f"\nBP4D-layout label tree: {len(index)} frames, 328 CSVs, 100 columns")
        print("| reader | best time (s) | peak memory (MB) | time ratio to pandas |")
        print("|---|---|---|---|")
        for name, seconds in best.items():
            ratio = seconds / best["pandas"]
            print(f"| {name} | {seconds:.3f} | {peaks[name] / 2**20:.0f} | {ratio:.2f} |")
        print("(read_bp4d includes value validation and matching every frame to its image)")
    sans, with_paths = memory_per_frame()
    print("\nFrameIndex, 1M frames x 23 AUs (occurrence + intensity):")
    print("| bytes per frame, paths excluded | bytes per frame, with paths |")
    print("|---|---|")
    print(f"| {sans:.0f} | {with_paths:.0f} |")


if __name__ == "__main__":
    main()
