"""The performance suite: every speed measurement of the project in one run, one table.

    python bench/suite.py [--quick] [--out docs/performance.md] [--threads N] [--repeats 3]
                          [--only index samplers episodes images maml renet baseline]
    python bench/suite.py --device cuda --out docs/performance_gpu.md      # on a GPU

Runs the measurements one after another in this process (never two at once) and prints one
markdown table, ``measurement | variant | value | unit | ratio``. ``ratio`` compares the
variants measured side by side in this run (e.g. cache / jpeg); it is blank where there is
nothing to compare. ``--out`` also writes the table with the command, the date, the machine
and one line per row saying what it measured.

1. ``index``: FrameIndex build, ``read_bp4d`` on a BP4D-layout tree of empty images
   (``bench_index.write_tree``) at 140k and 1M frames; the trees are written to a temporary
   folder first (untimed, the time is printed to stderr).
2. ``samplers``: every sampler of ``SAMPLERS``, building it and planning one epoch of 1M
   frames x 23 AUs (``bench_samplers.skewed_labels``).
3. ``episodes``: ``MetaTrainEpisodes`` items over a 140k-row, 40-subject, 12-AU synthetic
   FrameIndex with a ``FrameImages`` stub that returns empty tensors: the task draw, the
   support/query row draws and the label tensors, no pixels.
4. ``images``: images/s through a DataLoader (batch 64, ``train_transform`` 112 -> 96 px,
   0 and 2 workers), JPEG decoding against the decoded image cache, for BP4D-sized frames
   (SynthAU faces upscaled to 1392x1040 with sensor-like noise, JPEG quality 90) and for
   SynthAU's native 112 px JPEGs.
5. ``maml``: MAML meta-steps/s, the higher and torch.func inner loops (``bench_maml``).
6. ``renet``: RE-Net all-AU inference images/s, batched against naive (``bench_renet``).
7. ``baseline``: training steps/s of the baseline plugin's ResNet-18 (forward, masked BCE,
   backward, Adam step on random tensors), fp32 against bf16 autocast.

Every variant runs once as a warm-up, then the variants of a measurement take turns for
``--repeats`` timed runs each and the table gives the median. ``--quick`` shrinks every size
(a check that the suite runs, not a measurement). ``--device cuda`` runs the model
measurements (5-7) on the GPU at the papers' sizes (``GPU``: 224 px, batch 100), each timed
call ending in ``torch.cuda.synchronize``. A measurement that fails is reported in
the table and on stderr, the others still run, and the exit status is 1.

The full suite takes about 10 minutes on 2 quiet cores (most of it writing the 1M-file tree,
decoding the 1392x1040 JPEGs and the bf16 training steps). Run it with nothing else on the
machine: with other jobs on the cores, torch's threads wait for each other and the model
rows slow down several times (``--threads 1`` suffers less).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # bench/ is not a package: its modules are imported by name

import bench_index  # noqa: E402
import bench_maml  # noqa: E402
import bench_renet  # noqa: E402
import bench_samplers  # noqa: E402

from au_baseline import Baseline  # noqa: E402
from au_lightning.data import (  # noqa: E402
    AU_SETS,
    SAMPLERS,
    FrameDataset,
    FrameImages,
    FrameIndex,
    MetaTrainEpisodes,
    load_frame,
    read_bp4d,
    train_transform,
)
from au_lightning.data.synth import ensure_synthau  # noqa: E402
from au_maml import Conv4  # noqa: E402
from au_renet import RelationEmbeddedResNet  # noqa: E402

MEASUREMENTS = ("index", "samplers", "episodes", "images", "maml", "renet", "baseline")
#: the measurements that run on ``--device``; the others are CPU work
ON_DEVICE = ("maml", "renet", "baseline")
#: where the model measurements run (``--device``)
DEVICE = torch.device("cpu")
#: the SynthAU set of configs/baseline.yaml (usually already in the SynthAU cache)
SYNTHAU = {"subjects": 12, "videos": 4, "frames": 120, "size": 112, "seed": 0}
#: a BP4D frame: 1040 rows x 1392 columns
BP4D_FRAME = (1040, 1392)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each measurement does (``FULL``, or ``QUICK`` for ``--quick``)."""

    index_frames: tuple[int, ...]
    sampler_frames: int
    episode_frames: int
    episodes: int
    images: int
    maml_tasks: int
    maml_size: int
    renet_batches: tuple[int, ...]
    renet_size: int
    baseline_batch: int
    baseline_size: int
    baseline_steps: int


FULL = Sizes(
    index_frames=(140_000, 1_000_000),
    sampler_frames=1_000_000,
    episode_frames=140_000,
    episodes=2000,
    images=512,
    maml_tasks=12,
    maml_size=64,
    renet_batches=(8, 1),
    renet_size=112,
    baseline_batch=32,
    baseline_size=112,
    baseline_steps=1,
)
#: ``--device cuda``: the papers' image sizes and batches (RE-Net and the baseline: 224-px
#: crops, batch 100)
GPU = dataclasses.replace(
    FULL,
    renet_batches=(100, 1),
    renet_size=224,
    baseline_batch=100,
    baseline_size=224,
    baseline_steps=10,
)
QUICK = Sizes(
    index_frames=(5_000, 20_000),
    sampler_frames=50_000,
    episode_frames=14_000,
    episodes=200,
    images=64,
    maml_tasks=2,
    maml_size=32,
    renet_batches=(2, 1),
    renet_size=64,
    baseline_batch=4,
    baseline_size=64,
    baseline_steps=1,
)


@dataclasses.dataclass
class Row:
    """One line of the table, and the sentence of ``--out`` that says what it measured."""

    measurement: str
    variant: str
    value: float
    unit: str
    ratio: str = ""
    note: str = ""


# -- timing -------------------------------------------------------------------------------

_START = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr (stdout carries only the table)."""
    print(f"[{time.perf_counter() - _START:6.0f} s] {message}", file=sys.stderr, flush=True)


def sync() -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a call that returns its seconds."""

    def call() -> float:
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    return call


def interleaved(calls: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """One warm-up call of each variant, then ``repeats`` rounds in which every variant
    runs once in turn; the median of each variant's seconds (each call returns them)."""
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            seconds[name].append(call())
    return {name: statistics.median(times) for name, times in seconds.items()}


def ratio(numerator: float, denominator: float, label: str) -> str:
    """A ratio cell such as ``3.10 (cache / jpeg)``."""
    return f"{numerator / denominator:.2f} ({label})"


def count(n: int) -> str:
    """140000 -> 140k, 1000000 -> 1M, 5000 -> 5k, 512 -> 512."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


# -- 1. FrameIndex build ------------------------------------------------------------------


def measure_index(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """``read_bp4d`` on BP4D-layout trees of each size (written first, untimed)."""
    roots: dict[str, tuple[Path, int]] = {}
    for frames in sizes.index_frames:
        root = tmp / f"bp4d-{frames}"
        start = time.perf_counter()
        written = bench_index.write_tree(root, frames)
        log(f"index: wrote a {written:,}-frame BP4D tree in {time.perf_counter() - start:.1f} s")
        roots[f"{count(frames)} frames"] = (root, written)
    calls = {name: timed(lambda root=root: read_bp4d(root)) for name, (root, _) in roots.items()}
    seconds = interleaved(calls, repeats)
    rows = []
    for name, (_, written) in roots.items():
        note = (
            f"read_bp4d of a BP4D-layout tree (bench_index.write_tree: {written:,} frames in "
            "328 AU_OCC CSVs of 100 columns, one empty image file per frame; parsing, "
            f"validation and image matching), median of {repeats} after a warm-up"
        )
        rows.append(Row("FrameIndex build", name, seconds[name], "s", note=note))
        rate = written / seconds[name]
        same = "the row above as frames per second"
        rows.append(Row("FrameIndex build", name, rate, "frames/s", note=same))
    return rows


# -- 2. samplers --------------------------------------------------------------------------


def plan_seconds(name: str, labels: np.ndarray, batch_size: int) -> float:
    """Seconds to build sampler ``name`` and plan its first epoch
    (:func:`bench_samplers.plan`)."""
    start = time.perf_counter()
    bench_samplers.plan(name, labels, batch_size)
    return time.perf_counter() - start


def measure_samplers(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """Every sampler's epoch plan on skewed 23-AU labels, samplers interleaved."""
    labels = bench_samplers.skewed_labels(sizes.sampler_frames)
    calls = {name: lambda name=name: plan_seconds(name, labels, 32) for name in SAMPLERS}
    seconds = interleaved(calls, repeats)
    note = (
        f"building the sampler and planning one epoch of batch 32 on {labels.shape[0]:,} "
        "frames x 23 AUs (bench_samplers.skewed_labels: base rates 0.5% to 40%, 2% unknown), "
        f"median of {repeats} after a warm-up"
    )
    return [
        Row("Sampler epoch plan", name, seconds[name], "s/epoch", note=note) for name in SAMPLERS
    ]


# -- 3. episodes --------------------------------------------------------------------------


def synthetic_index(frames: int, subjects: int, aus: Sequence[int], seed: int = 0) -> FrameIndex:
    """A FrameIndex of ``frames`` rows over ``subjects`` subjects (8 videos each) with
    occurrence base rates from 5% to 45% and 2% unknown labels; no image files."""
    rng = np.random.default_rng(seed)
    position = np.arange(frames)
    subject = np.char.add("S", (position * subjects // frames).astype(str))
    video = np.char.add(
        np.char.add(subject, "/T"), (position * subjects * 8 // frames % 8 + 1).astype(str)
    )
    occurrence = (rng.random((frames, len(aus))) < np.linspace(0.05, 0.45, len(aus))).astype(
        np.int8
    )
    occurrence[rng.random(occurrence.shape) < 0.02] = -1
    return FrameIndex.from_columns(
        path=np.char.add(np.char.add(video, "/"), np.char.add(position.astype(str), ".jpg")),
        subject=subject,
        video=video,
        frame=position,
        aus=aus,
        occurrence=occurrence,
        dataset="synthetic",
    )


class NoImages(FrameImages):
    """A FrameImages stub: an empty ``(n, 0)`` tensor for any rows, so an episode costs only
    its index work (task and row draws, label and index tensors)."""

    def __call__(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        return torch.empty(len(rows), 0)


def measure_episodes(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """MetaTrainEpisodes items without pixels, and building its task list."""
    index = synthetic_index(sizes.episode_frames, 40, AU_SETS["bp4d"])
    images = NoImages(index)
    dataset = MetaTrainEpisodes(index, shots=5, images=images)
    ids = iter(range(10**9))  # every call draws new episodes

    def items() -> float:
        first = next(ids) * sizes.episodes
        start = time.perf_counter()
        for i in range(first, first + sizes.episodes):
            dataset[i]
        return time.perf_counter() - start

    def build() -> None:
        MetaTrainEpisodes(index, shots=5, images=images)

    seconds = interleaved({"items": items, "build": timed(build)}, repeats)
    what = (
        f"{len(index):,}-row synthetic FrameIndex, 40 subjects, BP4D's 12 AUs (base rates 5% "
        f"to 45%, 2% unknown), {len(dataset.tasks)} eligible tasks, N = 5"
    )
    return [
        Row(
            "Episode sampling (index only)",
            "MetaTrainEpisodes items",
            sizes.episodes / seconds["items"],
            "episodes/s",
            note=f"{sizes.episodes} consecutive MetaTrainEpisodes[i] (task draw, (5+, 5-) "
            "support and query row draws, label and index tensors) with a FrameImages stub "
            "(MetaTrainEpisodes has no method that draws only the rows) returning empty "
            f"tensors; {what}; median of {repeats} after a warm-up",
        ),
        Row(
            "Episode sampling (index only)",
            "task list build",
            seconds["build"],
            "s",
            note=f"MetaTrainEpisodes(...) construction (task_frames of every (subject, AU) "
            f"and the eligibility filter); {what}; median of {repeats} after a warm-up",
        ),
    ]


# -- 4. images: JPEG against the decoded image cache ------------------------------------


def bp4d_sized_frames(source: FrameIndex, rows: np.ndarray, out: Path, seed: int = 0) -> FrameIndex:
    """Write the SynthAU faces of ``rows`` as BP4D-sized frames under ``out`` (same relative
    paths): bicubic upscaling to 1392x1040, Gaussian noise of SD 3 (sensor noise, so the
    JPEGs are not unrealistically smooth), JPEG quality 90. Returns their FrameIndex."""
    height, width = BP4D_FRAME
    rng = np.random.default_rng(seed)
    noise = np.rint(rng.normal(0, 3, (height, width, 3))).astype(np.int16)
    for row in rows.tolist():
        face = load_frame(source, row).permute(1, 2, 0).numpy()
        big = np.asarray(Image.fromarray(face).resize((width, height), Image.BICUBIC), np.int16)
        shift = rng.integers(0, height), rng.integers(0, width)
        pixels = np.clip(big + np.roll(noise, shift, axis=(0, 1)), 0, 255).astype(np.uint8)
        path = out / str(source.path[row])
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
    return source.take(rows).replace(root=str(out), sources=())


def loader_seconds(loader: DataLoader) -> float:
    """Seconds of one pass over ``loader`` (all its batches)."""
    start = time.perf_counter()
    for _batch in loader:
        pass
    return time.perf_counter() - start


def measure_images(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """Images/s of FrameDataset + DataLoader, decoding JPEGs against the image cache."""
    from au_lightning.data.image_cache import build_image_cache, find_image_cache

    synth_root = ensure_synthau("bp4d", progress=False, **SYNTHAU)
    synth = read_bp4d(synth_root)
    rows = np.linspace(0, len(synth) - 1, sizes.images).round().astype(np.int64)
    start = time.perf_counter()
    big = bp4d_sized_frames(synth, rows, tmp / "bp4d-frames")
    kilobytes = sum((tmp / "bp4d-frames" / p).stat().st_size for p in big.path) / 1024 / len(big)
    log(
        f"images: wrote {len(big)} 1392x1040 JPEGs ({kilobytes:.0f} KB each) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    sources = {
        "1392x1040 JPEG": (
            big,
            "SynthAU faces upscaled to BP4D's 1392x1040 with noise of SD 3, JPEG quality 90 "
            f"(mean {kilobytes:.0f} KB a file)",
        ),
        "112 px JPEG": (
            synth.take(rows),
            "SynthAU frames at their native 112 px (the configs/baseline.yaml set)",
        ),
    }
    transform = train_transform(112, 96)
    out = []
    for source, (index, what) in sources.items():
        start = time.perf_counter()
        build_image_cache(index, 112, tmp / "image-cache")
        build = time.perf_counter() - start
        cached = find_image_cache(index, 112, tmp / "image-cache")
        if cached is None:
            raise RuntimeError(f"no image cache found right after building it ({source})")
        note = (
            f"build_image_cache of {len(index)} frames at 112 px, workers 0, {what}; one run "
            "(not repeated)"
        )
        out.append(Row("Image cache build", source, len(index) / build, "images/s", note=note))
        for workers in (0, 2):
            loaders = {
                name: DataLoader(
                    FrameDataset(index, None, transform, images=images),
                    batch_size=64,
                    shuffle=True,
                    num_workers=workers,
                    persistent_workers=workers > 0,
                )
                for name, images in (("jpeg", None), ("cache", cached))
            }
            calls = {
                name: lambda loader=loader: loader_seconds(loader)
                for name, loader in loaders.items()
            }
            seconds = interleaved(calls, repeats)
            del loaders, calls
            gc.collect()  # the persistent workers exit with their loaders
            loading = f"{workers} persistent workers" if workers else "no workers (main process)"
            for name in ("jpeg", "cache"):
                served = {
                    "jpeg": "decoded from the JPEG files (load_frame)",
                    "cache": "read from the 112 px decoded image cache (find_image_cache)",
                }[name]
                note = (
                    f"one shuffled pass over {len(index)} frames, {what}, {served}: "
                    "FrameDataset with train_transform(112, 96) (resize to 112, random 96 "
                    f"crop, flip, normalize), DataLoader batch 64, {loading}; median of "
                    f"{repeats} passes after a warm-up pass"
                )
                cell = ratio(seconds["jpeg"], seconds["cache"], "cache / jpeg")
                out.append(
                    Row(
                        f"DataLoader images, {source}",
                        f"{name}, {workers} workers",
                        len(index) / seconds[name],
                        "images/s",
                        cell if name == "cache" else "",
                        note,
                    )
                )
            log(f"images: {source}, {workers} workers done")
    return out


# -- 5. MAML ------------------------------------------------------------------------------


def measure_maml(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """Meta-steps/s of bench_maml's higher and func variants at its defaults."""
    options = argparse.Namespace(image_size=sizes.maml_size, tasks=sizes.maml_tasks, shots=5,
                                 inner_steps=1, optimizer="sgd", order=2)  # fmt: skip
    torch.manual_seed(0)
    base = Conv4(options.image_size).to(DEVICE)
    tasks = [
        tuple((x.to(DEVICE), y.to(DEVICE)) for x, y in task)
        for task in bench_maml.make_tasks(options.tasks, options.shots, options.image_size)
    ]
    losses = bench_maml.variants(options)
    steps = {
        name: timed(bench_maml.outer_step(copy.deepcopy(base), losses[name], tasks))
        for name in ("higher", "func")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = interleaved(steps, repeats)
    note = (
        f"bench_maml meta-step (au_maml.Conv4 at {options.image_size} px, {options.tasks} "
        "tasks of (5+, 5-) support and query, 1 SGD inner step, second order, query losses "
        "averaged, backward, Adam), au_lightning.InnerLoop backend higher or func; median of "
        f"{repeats} after a warm-up{on_device()}"
    )
    title = f"MAML meta-step, {options.image_size} px"
    return [
        Row(title, "higher", 1 / seconds["higher"], "meta-steps/s", note=note),
        Row(title, "func", 1 / seconds["func"], "meta-steps/s",
            ratio(seconds["higher"], seconds["func"], "func / higher"), note),
    ]  # fmt: skip


# -- 6. RE-Net ----------------------------------------------------------------------------


def measure_renet(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """All-AU inference images/s, RelationEmbeddedResNet's batched pass against its naive
    C passes (``forward_each``), with bench_renet.images_per_second."""
    torch.manual_seed(0)
    net = RelationEmbeddedResNet(12).eval()
    net.graph.set_relation(torch.rand(12, 12))
    net.to(DEVICE)
    runs = {"naive": net.forward_each, "batched": net}
    out = []
    with torch.inference_mode():
        for batch in sizes.renet_batches:
            images = torch.randn(batch, 3, sizes.renet_size, sizes.renet_size, device=DEVICE)
            calls = {
                name: lambda run=run, images=images: (
                    len(images)
                    / bench_renet.images_per_second(lambda x, run=run: (run(x), sync()), images, 1)
                )
                for name, run in runs.items()
            }
            seconds = interleaved(calls, repeats)
            note = (
                "RelationEmbeddedResNet (ResNet-18, 12 AUs) in eval mode under inference_mode, "
                f"random {sizes.renet_size} px images, batch {batch}: batched = one pass for "
                f"all AUs, naive = forward_each (12 passes); median of {repeats} calls after a "
                f"warm-up{on_device()}"
            )
            for name in ("naive", "batched"):
                cell = ratio(seconds["naive"], seconds["batched"], "batched / naive")
                out.append(
                    Row(
                        f"RE-Net all-AU inference, {sizes.renet_size} px, batch {batch}",
                        name,
                        batch / seconds[name],
                        "images/s",
                        cell if name == "batched" else "",
                        note,
                    )
                )
    return out


# -- 7. baseline training -----------------------------------------------------------------


def train_step(model: Baseline, batch: dict[str, torch.Tensor], bf16: bool) -> Callable[[], float]:
    """One training step per call (forward and loss, under bf16 autocast if ``bf16``;
    backward; Adam step); returns its seconds."""
    optimizer = model.configure_optimizers()
    model.train()

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_loss(batch, model(batch["image"]))
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    return step


def measure_baseline(sizes: Sizes, repeats: int, tmp: Path) -> list[Row]:
    """Training steps/s of the baseline plugin, fp32 against bf16 autocast."""
    torch.manual_seed(0)
    model = Baseline(aus="bp4d")  # configs/baseline.yaml: resnet18, not pretrained, Adam
    size, n = sizes.baseline_size, sizes.baseline_batch
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(n, 3, size, size, generator=generator).to(DEVICE),
        "occurrence": torch.randint(-1, 2, (n, len(model.aus)), generator=generator).to(DEVICE),
    }
    model.to(DEVICE)
    steps_per_call = sizes.baseline_steps
    variants = {"fp32": False, "bf16": True}
    calls = {}
    for name, bf16 in variants.items():
        step = train_step(copy.deepcopy(model), batch, bf16)
        calls[name] = lambda step=step: sum(step() for _ in range(steps_per_call))
    seconds = interleaved(calls, repeats)
    note = (
        f"au_baseline.Baseline (ResNet-18 of configs/baseline.yaml, 12 AUs) training step on "
        f"random {size} px images, batch {n}: forward, masked BCE, backward, Adam; bf16 = "
        f"torch.autocast('{DEVICE.type}', bfloat16) around forward and loss; {steps_per_call} "
        f"step(s) per timed call, median of {repeats} calls after a warm-up call{on_device()}"
    )
    rate = {name: steps_per_call / seconds[name] for name in variants}
    title = f"Baseline training step, {size} px, batch {n}"
    return [
        Row(title, "fp32", rate["fp32"], "steps/s", note=note),
        Row(title, "bf16 autocast", rate["bf16"], "steps/s",
            ratio(seconds["fp32"], seconds["bf16"], "bf16 / fp32"), note),
    ]  # fmt: skip


def on_device() -> str:
    """The note's tail naming the GPU the measurement ran on (empty on the CPU)."""
    if DEVICE.type != "cuda":
        return ""
    return f"; on {torch.cuda.get_device_name(DEVICE)}, each call ending in cuda.synchronize"


MEASURE: dict[str, Callable[[Sizes, int, Path], list[Row]]] = {
    "index": measure_index,
    "samplers": measure_samplers,
    "episodes": measure_episodes,
    "images": measure_images,
    "maml": measure_maml,
    "renet": measure_renet,
    "baseline": measure_baseline,
}


# -- output -------------------------------------------------------------------------------


def number(value: float) -> str:
    """A value cell with about three significant digits."""
    if math.isnan(value):
        return "not measured"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The markdown table of ``rows``."""
    lines = ["| measurement | variant | value | unit | ratio |", "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.measurement} | {r.variant} | {number(r.value)} | {r.unit} | {r.ratio} |"
        )
    return "\n".join(lines)


def _first_line(path: str, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":" if ":" in line else "=", 1)[1].strip().strip('"')
    return None


def machine() -> list[tuple[str, str]]:
    """What the numbers depend on: CPU, cores, RAM, OS and library versions, threads."""
    import lightning
    import PIL
    import torchvision

    memory = _first_line("/proc/meminfo", "MemTotal")
    ram = f"{int(memory.split()[0]) / 2**20:.1f} GiB" if memory else "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = _first_line("/etc/os-release", "PRETTY_NAME") or platform.system()
    flags = set((_first_line("/proc/cpuinfo", "flags") or "").split())
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["none"]
    cpu = _first_line("/proc/cpuinfo", "model name") or platform.processor() or "?"
    return [
        (
            "CPU",
            f"{cpu} (torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 instructions: {', '.join(bf16)})",
        ),
        ("cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("RAM", ram),
        ("OS", f"{system}, kernel {platform.release()}"),
        ("Python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("lightning", lightning.__version__),
        ("Pillow", PIL.__version__),
        ("numpy", np.__version__),
        ("torch threads", str(torch.get_num_threads())),
        *(
            [("GPU", f"{torch.cuda.get_device_name(DEVICE)} (CUDA {torch.version.cuda})")]
            if DEVICE.type == "cuda"
            else []
        ),
    ]


def report(
    rows: list[Row], command: str, started: datetime.datetime, seconds: float, quick: bool
) -> str:
    """The text of ``docs/performance.md``."""
    lines = [
        "# Performance",
        "",
        "Measured by `bench/suite.py`: every variant runs once as a warm-up, then the variants "
        "of a measurement take turns and the table gives the median. `ratio` compares "
        "variants measured side by side in the same run.",
        "",
        f"- command: `{command}`",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z')} (the suite took {seconds / 60:.1f} min)",
    ]
    if quick:
        lines.append("- **--quick: tiny sizes, a check that the suite runs, not a measurement**")
    lines += [f"- {key}: {value}" for key, value in machine()]
    lines += ["", table(rows), "", "## What each row measured", ""]
    lines += [f"- **{r.measurement}, {r.variant}** ({r.unit}): {r.note}" for r in rows]
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------


def run(names: Sequence[str], sizes: Sizes, repeats: int) -> tuple[list[Row], bool]:
    """The rows of the measurements ``names``, in order; and whether all of them ran."""
    rows: list[Row] = []
    ok = True
    for name in names:
        log(f"{name}: start")
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"suite-{name}-") as tmp:
                rows += MEASURE[name](sizes, repeats, Path(tmp))
        except Exception as err:
            ok = False
            traceback.print_exc()
            rows.append(
                Row(name, "-", math.nan, "", note=f"not measured: {type(err).__name__}: {err}")
            )
        log(f"{name}: {time.perf_counter() - start:.1f} s")
    return rows, ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, help="run only these")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the model measurements run; cuda runs only those "
                        f"({', '.join(ON_DEVICE)}), at the GPU sizes")  # fmt: skip
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    global DEVICE
    DEVICE = torch.device(options.device)
    started = datetime.datetime.now().astimezone()
    allowed = ON_DEVICE if DEVICE.type == "cuda" else MEASUREMENTS
    names = [n for n in allowed if options.only is None or n in options.only]
    sizes = QUICK if options.quick else GPU if DEVICE.type == "cuda" else FULL
    rows, ok = run(names, sizes, options.repeats)
    print(table(rows))
    if options.out:
        command = shlex.join(["python", "bench/suite.py", *sys.argv[1:]])
        text = report(rows, command, started, time.perf_counter() - _START, options.quick)
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text)
        log(f"wrote {options.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
