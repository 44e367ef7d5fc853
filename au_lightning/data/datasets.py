"""FrameDataset: rows of a FrameIndex as dicts of tensors, images decoded on access."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from au_lightning.data.errors import ImageReadError
from au_lightning.data.index import FrameIndex
from au_lightning.data.video import read_video_frame

if TYPE_CHECKING:
    from au_lightning.data.image_cache import DecodedImages

__all__ = ["FrameDataset", "load_frame"]


def load_frame(index: FrameIndex, row: int) -> torch.Tensor:
    """The RGB uint8 image (3, H, W) of one row: an image file, or a video frame for rows
    with ``extras["video_pos"]``. A missing or corrupt file raises naming the file."""
    path = Path(index.root) / str(index.path[row])
    if "video_pos" in index.extras:
        frame = read_video_frame(path, int(index.extras["video_pos"][row]))
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    try:
        with Image.open(path) as image:
            return pil_to_tensor(_rgb8(image))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        problem = "not found" if not path.is_file() else f"cannot be decoded ({err})"
        raise ImageReadError(f"{path}: image {problem}") from err


def _rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB. A 16-bit grey image (PNG, TIFF: modes ``I;16*`` and ``I``) is scaled to
    8 bits, 65535 -> 255; PIL's own conversion clips every value above 255 to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image, dtype=np.float64)
        if grey.min() < 0 or grey.max() > 65535:
            raise ValueError(
                f"{image.mode} values {grey.min():.0f}..{grey.max():.0f} are not 16-bit"
            )
        grey8 = np.round(grey / 257.0).astype(np.uint8)
        return Image.fromarray(grey8).convert("RGB")
    return image.convert("RGB")


class FrameDataset(Dataset[dict[str, Any]]):
    """Items are dicts: ``image`` (float tensor after ``transform``), ``occurrence`` (L,)
    int8 with -1 unknown, ``intensity`` (L,) if the index has it, ``expression`` if it has
    it, ``subject`` (str) and ``index`` (the row in the FrameIndex).

    ``images`` (:func:`~au_lightning.data.find_image_cache`) serves the uint8 image of a row
    from the decoded image cache instead of :func:`load_frame`; ``transform`` is the same
    (its first step, the resize to the cache's size, then leaves the image unchanged)."""

    def __init__(
        self,
        index: FrameIndex,
        rows: np.ndarray | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        images: DecodedImages | None = None,
    ) -> None:
        if images is not None and len(images) != len(index):
            raise ValueError(f"{images!r} has {len(images)} rows; the index has {len(index)}")
        self.index = index
        self.rows = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.transform = transform
        self.images = images

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``key``: a position, or ``(position, draw)``, whose random transform then
        runs on a CPU generator seeded with ``draw``, the process's own left as it was
        (:class:`~au_lightning.data.LabelBatchSampler`'s ``seeded_draws``)."""
        i, draw = key if isinstance(key, tuple) else (key, None)
        row = int(self.rows[i])
        ix = self.index
        image = self.images[row] if self.images is not None else load_frame(ix, row)
        if self.transform is not None and draw is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(draw)
                image = self.transform(image)
        elif self.transform is not None:
            image = self.transform(image)
        item: dict[str, Any] = {
            "image": image,
            "occurrence": torch.from_numpy(ix.occurrence[row]),
            "subject": str(ix.subject_names[ix.subject_code[row]]),
            "index": row,
        }
        if ix.intensity is not None:
            item["intensity"] = torch.from_numpy(ix.intensity[row])
        if ix.expression is not None:
            item["expression"] = int(ix.expression[row])
        return item
