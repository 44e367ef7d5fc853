"""The decoded image cache: bit-identical pixels, transparent use, invalidation, the CLI."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from au_lightning.cli import main
from au_lightning.data import (
    AUDataModule,
    DecodedImages,
    EpisodeDataModule,
    FrameDataset,
    FrameImages,
    FrameIndex,
    ImageReadError,
    build_image_cache,
    cached_read,
    datamodules,
    datasets,
    episodes,
    eval_transform,
    find_image_cache,
    image_cache,
    image_cache_path,
    load_frame,
    read_dataset,
    train_transform,
)
from au_lightning.data.synth import ensure_synthau

SYNTH = {"subjects": 3, "videos": 1, "frames": 10, "size": 48, "seed": 0, "workers": 1}
SIZE = 40  # not the SynthAU size, so building really resizes


@pytest.fixture(scope="module")
def synth_root(cache: Path) -> Path:
    return ensure_synthau("bp4d", progress=False, **SYNTH)


@pytest.fixture
def root(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the module's SynthAU set and a private cache folder, so a test may
    change files and build caches without touching another test's."""
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(synth_root, tmp_path / "bp4d"))


def resized(index: FrameIndex, row: int, size: int = SIZE) -> torch.Tensor:
    return v2.Resize((size, size), antialias=True)(load_frame(index, row))


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every image decode fail, so whatever still works reads the memory map."""

    def refuse(index: FrameIndex, row: int) -> torch.Tensor:
        raise AssertionError(f"load_frame called for row {row}")

    monkeypatch.setattr(datasets, "load_frame", refuse)
    monkeypatch.setattr(episodes, "load_frame", refuse)


def make(root: Path, **kwargs) -> AUDataModule:
    options = dict(
        dataset="bp4d", root=str(root), image_size=SIZE, crop_size=32, batch_size=4,
        num_folds=3, val_strategy="frames", val_fraction=0.2, cache=True,
    )  # fmt: skip
    options.update(kwargs)
    dm = AUDataModule(**options)
    dm.setup("fit")
    return dm


def all_batches(dm: AUDataModule) -> list[dict]:
    out = []
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        torch.manual_seed(0)
        out += list(loader)
    return out


def stale_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stale image cache" in r.getMessage()]


def test_resizing_to_the_same_size_is_a_no_op() -> None:
    """The premise of the cache: the pipeline's first step leaves a cached image as it is."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    channels_last = image.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # as PIL decodes
    for x in (image, channels_last):
        assert torch.equal(v2.Resize((SIZE, SIZE), antialias=True)(x), x)
    torch.manual_seed(3)
    direct = train_transform(SIZE, 32)(image)
    torch.manual_seed(3)
    assert torch.equal(train_transform(SIZE, 32)(channels_last), direct)


def test_cached_rows_are_the_resized_decoded_frames(root: Path) -> None:
    index = cached_read("bp4d", root)
    file = build_image_cache(index, SIZE)
    assert file == image_cache_path(index, SIZE) and file.parent.name == "images"
    assert sorted(p.name for p in file.parent.iterdir()) == [f"{file.stem}.json", file.name]
    meta = json.loads(file.with_suffix(".json").read_text())
    assert meta["complete"] is True and meta["shape"] == [len(index), 3, SIZE, SIZE]
    assert [tuple(s) for s in meta["sources"]] == list(index.sources)
    array = np.load(file, mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == (30, 3, SIZE, SIZE)
    images = find_image_cache(index, SIZE)
    assert isinstance(images, DecodedImages) and len(images) == len(index)
    for row in range(len(index)):
        assert images[row].dtype == torch.uint8
        assert torch.equal(images[row], resized(index, row)), row
    parallel = build_image_cache(index, SIZE, root / "parallel", workers=2)
    assert np.array_equal(np.load(parallel), array)


def test_frame_dataset_items_are_bitwise_equal_with_the_cache(root: Path) -> None:
    index = cached_read("bp4d", root)
    build_image_cache(index, SIZE)
    images = find_image_cache(index, SIZE)
    for transform in (train_transform(SIZE, 32), eval_transform(SIZE, 32)):
        plain = FrameDataset(index, None, transform)
        cached = FrameDataset(index, None, transform, images=images)
        for i in range(len(index)):
            torch.manual_seed(i)
            expected = plain[i]
            torch.manual_seed(i)
            got = cached[i]
            assert torch.equal(got["image"], expected["image"]), i
            assert torch.equal(got["occurrence"], expected["occurrence"])
    with pytest.raises(ValueError, match="has 30 rows; the index has 29"):
        FrameDataset(index.take(np.arange(29)), images=images)


def test_datamodule_reads_the_memmap_and_yields_the_same_batches(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = all_batches(make(root, cache=False))
    build_image_cache(cached_read("bp4d", root), SIZE)
    lookups = []

    def counted(index: FrameIndex, size: int) -> DecodedImages | None:
        lookups.append(size)
        return find_image_cache(index, size)

    monkeypatch.setattr(datamodules, "find_image_cache", counted)
    dm = make(root)
    no_decoding(monkeypatch)
    got = all_batches(dm)
    assert all_batches(dm)  # again: no new look-up
    assert lookups == [SIZE]  # one index, looked up once
    assert len(got) == len(expected) > 3
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["image"], b["image"])
    subset = make(root, aus=[1, 2, 12])  # other AUs, the same rows: the same cache
    assert subset.decoded_images(subset.index).file == dm.decoded_images(dm.index).file


def test_no_cache_for_another_image_size_or_without_cache(root: Path) -> None:
    index = cached_read("bp4d", root)
    build_image_cache(index, SIZE)
    assert find_image_cache(index, 36) is None
    other = make(root, image_size=36)
    assert other.decoded_images(other.index) is None
    off = make(root, cache=False)
    assert off.decoded_images(off.index) is None
    assert off.test_dataloader().dataset.images is None
    on = make(root)
    assert on.test_dataloader().dataset.images is not None


@pytest.mark.parametrize("change", ["label file", "image folder"])
def test_a_cache_whose_sources_changed_is_ignored_with_a_warning(
    root: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    index = cached_read("bp4d", root)
    file = build_image_cache(index, SIZE)
    if change == "label file":
        changed = root / "AUCoding" / "AU_OCC" / "F001_T1.csv"
        st = changed.stat()
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    else:
        changed = root / "F001" / "T1"
        (changed / "extra.txt").write_text("a file added to an image folder")
    with caplog.at_level(logging.WARNING, logger="au_lightning.data"):
        assert find_image_cache(index, SIZE) is None
        assert find_image_cache(cached_read("bp4d", root), SIZE) is None  # re-read or not
    [message, *_] = stale_warnings(caplog)
    assert str(file) in message and str(changed.resolve()) in message
    build_image_cache(cached_read("bp4d", root), SIZE)  # rebuilding makes it valid again
    assert find_image_cache(cached_read("bp4d", root), SIZE) is not None


def test_other_rows_have_another_cache(root: Path) -> None:
    index = cached_read("bp4d", root)
    build_image_cache(index, SIZE)
    fewer = index.take(np.arange(1, len(index)))  # e.g. a frame dropped from the labels
    assert image_cache_path(fewer, SIZE) != image_cache_path(index, SIZE)
    assert find_image_cache(fewer, SIZE) is None
    moved = index.replace(path=np.roll(index.path, 1))  # the same files in another order
    assert find_image_cache(moved, SIZE) is None


def test_an_interrupted_or_damaged_build_is_not_used(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    index = cached_read("bp4d", root)
    file = build_image_cache(index, SIZE)
    calls = []

    def interrupted(index: FrameIndex, row: int) -> torch.Tensor:
        calls.append(row)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return load_frame(index, row)

    with monkeypatch.context() as mp:
        mp.setattr(image_cache, "load_frame", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build_image_cache(index, SIZE)
    assert find_image_cache(index, SIZE) is None  # the old sidecar went first
    assert [p.name for p in file.parent.iterdir()] == [file.name]  # no temporary file left
    build_image_cache(index, SIZE)
    sidecar = file.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "complete": False}))  # killed before the end
    assert find_image_cache(index, SIZE) is None
    sidecar.write_text(json.dumps(meta))
    assert find_image_cache(index, SIZE) is not None
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a truncated array
    with caplog.at_level(logging.WARNING, logger="au_lightning.data"):
        assert find_image_cache(index, SIZE) is None
    assert any(str(file) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_fails_the_build_naming_the_file(root: Path, workers: int) -> None:
    index = cached_read("bp4d", root)
    bad = str(index.path[7])
    (root / bad).write_bytes(b"not a jpeg")
    message = rf"{re.escape(bad)}: image cannot be decoded"
    with pytest.raises(ImageReadError, match=message) as raised:
        build_image_cache(index, SIZE, workers=workers)
    assert "DataLoader worker" not in str(raised.value)  # the file's error, not a traceback
    folder = image_cache_path(index, SIZE).parent
    assert list(folder.iterdir()) == []  # neither an array, a sidecar nor a temporary file


def test_decoded_images_pickle_by_path_and_serve_worker_processes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = cached_read("bp4d", root)
    file = build_image_cache(index, SIZE)
    images = find_image_cache(index, SIZE)
    first = images[0]  # the map is open in this process now
    blob = pickle.dumps(images)
    assert len(blob) < 10_000 < file.stat().st_size
    assert torch.equal(pickle.loads(blob)[0], first)
    no_decoding(monkeypatch)  # forked workers inherit the patch
    loader = DataLoader(FrameDataset(index, images=images), batch_size=8, num_workers=2)
    served = torch.cat([batch["image"] for batch in loader])
    assert torch.equal(served, torch.from_numpy(np.load(file)))


def test_cli_index_builds_the_cache_the_datamodule_uses(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    main(["index", "--dataset", "bp4d", "--root", str(root), "--cache-images", str(SIZE),
          "--workers", "2"])  # fmt: skip
    out = capsys.readouterr().out
    found = re.search(r"decoded images: (\S+) \(([\d.]+) MB, 30 at (\d+) images/s\)", out)
    assert found, out
    file = Path(found[1])
    assert float(found[2]) == pytest.approx(file.stat().st_size / 1e6, abs=0.06)
    dm = make(root)
    no_decoding(monkeypatch)
    assert dm.decoded_images(dm.index).file == file
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)


def test_episode_images_read_the_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = cached_read("bp4d", root)
    build_image_cache(index, SIZE)
    expected = FrameImages.eval(index, SIZE, 32)(range(len(index)))
    dm = EpisodeDataModule(dataset="bp4d", root=str(root), image_size=SIZE, crop_size=32)
    dm.setup("fit")
    no_decoding(monkeypatch)
    pipeline = dm.images(dm.index)
    assert pipeline.decoded is not None
    assert torch.equal(pipeline(range(len(index))), expected)
    with pytest.raises(ValueError, match="holds 40 px images; need 48"):
        FrameImages.eval(index, 48, 32, decoded=pipeline.decoded)


def test_video_rows(cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    synth = {"subjects": 2, "videos": 1, "frames": 6, "size": 32, "seed": 0, "workers": 1}
    disfa = ensure_synthau("disfa", progress=False, **synth)
    index = read_dataset("disfa", disfa, intensity_threshold=">0", frames="video")
    assert "video_pos" in index.extras
    file = build_image_cache(index, 24, tmp_path)
    images = find_image_cache(index, 24, tmp_path)
    for row in range(len(index)):
        assert torch.equal(images[row], resized(index, row, 24)), row
    # the same video path at other positions is other data
    shifted = index.replace(extras={"video_pos": np.roll(index.extras["video_pos"], 1)})
    assert image_cache_path(shifted, 24, tmp_path) != file
    video = disfa / str(index.path[0])
    meta = json.loads(file.with_suffix(".json").read_text())
    assert str(video.resolve()) in [s[0] for s in meta["image_sources"]]
