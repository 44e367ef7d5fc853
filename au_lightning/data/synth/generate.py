"""Generate SynthAU into a real dataset layout, deterministically per seed, and cache it.

Each video (or chunk of expression images) is one job with its own random stream derived from
(seed, layout, subject, video), so the result does not depend on the number of worker
processes. Images are rendered and written by the workers; label files by the main process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from au_lightning.data.cache import cache_dir
from au_lightning.data.synth.dynamics import au_timeline, nuisance_array, nuisance_track
from au_lightning.data.synth.expressions import sample_expression_image
from au_lightning.data.synth.face import SYNTH_AUS, render_face, sample_look
from au_lightning.data.synth.subjects import (
    SynthSubject,
    layout_key,
    make_subjects,
    subject_names,
)
from au_lightning.data.synth.writers import LabelWriter, SynthVideo, writer_for
from au_lightning.data.video import MJPGWriter, opencv_available
from au_lightning.errors import ConfigError

__all__ = ["LAYOUTS", "Layout", "SynthResult", "ensure_synthau", "generate"]

Layout = Literal["bp4d", "disfa", "rafdb", "emotionet", "table"]
LAYOUTS: tuple[str, ...] = ("bp4d", "disfa", "rafdb", "emotionet", "table")
VERSION = 1
#: fraction of (frame, AU) labels made unknown, per layout (DISFA has none)
UNKNOWN_FRACTION = {"bp4d": 0.01, "disfa": 0.0, "emotionet": 0.03, "table": 0.01}
EMOTIONET_STRIDE = 10


@dataclasses.dataclass(frozen=True)
class VideoJob:
    subject: SynthSubject
    video: str
    n_frames: int
    first_frame: int
    entropy: tuple[int, ...]
    size: int
    out: str
    image_name: str  # format string with {frame}
    keep_every: int = 1
    unknown_fraction: float = 0.0
    video_file: str | None = None


def _unknown_mask(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Unknown labels in short runs (a tracking failure, an uncoded stretch) per AU."""
    mask = np.zeros((n, len(SYNTH_AUS)), dtype=bool)
    if fraction <= 0:
        return mask
    for j in range(len(SYNTH_AUS)):
        for _ in range(rng.poisson(fraction * n / 8)):
            start = int(rng.integers(0, n))
            mask[start : start + int(rng.integers(4, 13)), j] = True
    return mask


def _render_video(job: VideoJob) -> SynthVideo:
    rng = np.random.default_rng(job.entropy)
    timeline = au_timeline(job.n_frames, rng)
    track = nuisance_track(job.n_frames, rng)
    unknown = _unknown_mask(job.n_frames, job.unknown_fraction, rng)
    pixels_rng = np.random.default_rng([*job.entropy, 1])
    bias = dict(job.subject.bias)
    keep = np.arange(0, job.n_frames, job.keep_every)
    frames = job.first_frame + keep
    paths = [job.image_name.format(frame=int(f)) for f in frames]
    recorder = MJPGWriter(Path(job.out) / job.video_file, job.size) if job.video_file else None
    for t, rel in zip(keep.tolist(), paths, strict=True):
        shown = {au: min(5.0, timeline[t, j] + bias.get(au, 0.0)) for j, au in enumerate(SYNTH_AUS)}
        image = render_face(job.subject.look, shown, track[t], job.size, pixels_rng)
        target = Path(job.out) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target, quality=95)
        if recorder:
            recorder.write(image)
    if recorder:
        recorder.close()
    intensity = np.floor(timeline[keep] + 0.5).astype(np.int8)
    intensity[unknown[keep]] = -1
    return SynthVideo(
        subject=job.subject.name,
        video=job.video,
        frames=frames.astype(np.int32),
        intensity=intensity,
        nuisance=nuisance_array([track[t] for t in keep]),
        paths=paths,
    )


def _video_specs(
    layout: str, subject: str, s: int, videos: int, frames: int, seed: int
) -> list[tuple[str, int, int, str, str | None]]:
    """(video name, frame count, first frame number, image path pattern, video file) of one
    subject's videos in ``layout``."""
    if layout == "disfa":
        video_file = (
            f"Videos_LeftCamera/LeftVideo{subject}_comp.avi" if opencv_available() else None
        )
        return [(subject, frames * videos, 1, f"{subject}/{{frame}}.jpg", video_file)]
    specs = []
    for v in range(videos):
        task = f"T{v + 1}"
        if layout == "bp4d":  # BP4D pads frame names to 3 digits for M009-M018, else 4
            digits = 3 if subject[0] == "M" and int(subject[1:]) >= 9 else 4
            first = int(np.random.default_rng([seed, layout_key(layout), s, v, 7]).integers(1, 600))
            pattern = f"{subject}/{task}/{{frame:0{digits}d}}.jpg"
        elif layout == "emotionet":
            first, pattern = 1, f"images/{subject}_{task}_{{frame:04d}}.jpg"
        else:
            first, pattern = 1, f"images/{subject}/{task}/{{frame:04d}}.jpg"
        specs.append((f"{subject}_{task}", frames, first, pattern, None))
    return specs


def _video_jobs(
    layout: str, out: Path, subjects: Sequence[SynthSubject], videos: int, frames: int,
    size: int, seed: int,
) -> list[VideoJob]:  # fmt: skip
    return [
        VideoJob(
            subject=subject,
            video=video,
            n_frames=n,
            first_frame=first,
            entropy=(seed, layout_key(layout), s, v),
            size=size,
            out=str(out),
            image_name=pattern,
            keep_every=EMOTIONET_STRIDE if layout == "emotionet" else 1,
            unknown_fraction=UNKNOWN_FRACTION[layout],
            video_file=video_file,
        )
        for s, subject in enumerate(subjects)
        for v, (video, n, first, pattern, video_file) in enumerate(
            _video_specs(layout, subject.name, s, videos, frames, seed)
        )
    ]


@dataclasses.dataclass
class SynthResult:
    """What :func:`generate` wrote: the root, and the ground truth it wrote there."""

    root: Path
    videos: list[SynthVideo]
    #: expression images: (file name, label code, consistency, ambiguous)
    expressions: list[tuple[str, int, float, bool]]


@dataclasses.dataclass(frozen=True)
class ExpressionJob:
    first: int
    count: int
    total_train: int
    seed: int
    ambiguous_fraction: float
    size: int
    out: str


def _render_expressions(job: ExpressionJob) -> list[tuple[str, int, float, bool]]:
    rows = []
    for i in range(job.first, job.first + job.count):
        rng = np.random.default_rng([job.seed, 9001, i])
        look = sample_look(rng)
        ambiguous = bool(rng.random() < job.ambiguous_fraction)
        label, aus, nuisance, consistency = sample_expression_image(rng, ambiguous)
        image = render_face(look, aus, nuisance, job.size, rng)
        split, number = (
            ("train", i + 1) if i < job.total_train else ("test", i - job.total_train + 1)
        )
        name = f"{split}_{number:05d}.jpg"
        target = Path(job.out) / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target, quality=95)
        rows.append((name, label, float(consistency), ambiguous))
    return rows


def _run(jobs: list, fn: Callable, workers: int | None, desc: str, progress: bool) -> list:
    """Run jobs in worker processes, results in job order, with a progress bar."""
    workers = workers or os.cpu_count() or 1
    results: list = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress)
    if workers == 1:
        for i, job in enumerate(jobs):
            results[i] = fn(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return results


def generate(
    layout: Layout,
    out: str | Path,
    *,
    subjects: int = 12,
    videos: int = 4,
    frames: int = 120,
    size: int = 112,
    seed: int = 0,
    images: int = 600,
    ambiguous_fraction: float = 0.2,
    workers: int | None = None,
    progress: bool = True,
) -> SynthResult:
    """Write SynthAU in ``layout`` into the empty or new folder ``out``.

    Args:
        layout: ``bp4d``, ``disfa`` (one video per subject of ``frames * videos`` frames, plus
            an .avi when OpenCV is installed), ``emotionet`` (every 10th frame as a still
            image), ``table``, or ``rafdb`` (``images`` expression images, 80% train).
        subjects, videos, frames, size: how much and how large (size in pixels, square).
        seed: the same seed gives byte-identical labels and the same images.
        images, ambiguous_fraction: RAF-DB-style expression images and the fraction whose
            label comes from a non-AU cue.
        workers: processes (default: all cores); results do not depend on it.
        progress: show a progress bar.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown SynthAU layout {layout!r}; known: {', '.join(LAYOUTS)}")
    for name, value in (("videos", videos), ("frames", frames), ("size", size)):
        if value < 1:
            raise ConfigError(f"{name}={value}; expected a positive number")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; SynthAU writes into a new or empty folder")
    if layout != "rafdb":
        subject_names(layout, subjects)  # a subject count the layout cannot name fails first
    # written beside ``out`` and renamed into place: a run that fails leaves nothing, and of
    # two runs into one folder the second fails instead of mixing its files into the first's
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        result = _write(layout, work, subjects, videos, frames, size, seed, images,
                        ambiguous_fraction, workers, progress)  # fmt: skip
        try:
            os.rename(work, out)
        except OSError:
            raise FileExistsError(
                f"{out} was written by another run while this one generated; SynthAU writes "
                "into a new or empty folder"
            ) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dataclasses.replace(result, root=out)


def _write(
    layout: str, out: Path, subjects: int, videos: int, frames: int, size: int, seed: int,
    images: int, ambiguous_fraction: float, workers: int | None, progress: bool,
) -> SynthResult:  # fmt: skip
    """:func:`generate`'s files, written into the existing folder ``out``."""
    writer: LabelWriter = writer_for(layout, out)
    result = SynthResult(out, [], [])
    if layout == "rafdb":
        n_train = round(images * 0.8)
        chunk = 50
        jobs = [
            ExpressionJob(i, min(chunk, images - i), n_train, seed, ambiguous_fraction, size,
                          str(out))
            for i in range(0, images, chunk)
        ]  # fmt: skip
        rows = [r for part in _run(jobs, _render_expressions, workers, "SynthAU rafdb", progress)
                for r in part]  # fmt: skip
        writer.write_expressions(rows)
        result.expressions = rows
    else:
        people = make_subjects(layout, subjects, seed)
        jobs = _video_jobs(layout, out, people, videos, frames, size, seed)
        results = _run(jobs, _render_video, workers, f"SynthAU {layout}", progress)
        writer.write_videos(results)
        result.videos = results
    return result


def _key(layout: str, params: dict) -> str:
    text = json.dumps({"layout": layout, "version": VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_synthau(
    layout: Layout = "bp4d",
    *,
    directory: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    **params: int | float,
) -> Path:
    """The root of a SynthAU set with these parameters, generated on first use.

    Sets live in ``directory`` (default ``$AU_LIGHTNING_CACHE/synthau``). Generation writes to
    a temporary folder and renames it into place, so two processes that start together never
    see a half-written set: the first rename wins and the other run's copy is discarded.
    """
    base = Path(directory) if directory is not None else cache_dir() / "synthau"
    final = base / f"{layout}-{_key(layout, params)}"
    manifest = final / "synthau.json"
    if manifest.is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=base))
    try:
        generate(layout, tmp, progress=progress, workers=workers, **params)  # type: ignore[arg-type]
        info = {"layout": layout, "version": VERSION, **params}
        (tmp / "synthau.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:
            if not manifest.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
