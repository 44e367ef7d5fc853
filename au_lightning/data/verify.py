"""Decode every frame of an index once, before training: a corrupt image then fails in
seconds, listed with every other one, rather than mid-epoch after hours."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from au_lightning.data.datasets import load_frame
from au_lightning.data.errors import ImageReadError
from au_lightning.data.index import FrameIndex

__all__ = ["check_images", "unreadable_frames"]

_CHUNK = 64


class _Decoded(Dataset):
    """Row -> "" when its image decodes, else the ImageReadError's message (naming the file
    and the reason)."""

    def __init__(self, index: FrameIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> str:
        try:
            load_frame(self.index, row)
        except ImageReadError as err:
            return str(err)
        return ""


def unreadable_frames(index: FrameIndex, workers: int = 0, progress: bool = True) -> list[str]:
    """Decode every row of ``index`` (in ``workers`` processes); the messages of those that
    cannot be read, in row order, each naming its file and why."""
    loader = DataLoader(_Decoded(index), batch_size=_CHUNK, num_workers=workers, collate_fn=list)
    found: list[str] = []
    with tqdm(total=len(index), desc="verify", unit="image", disable=not progress) as bar:
        for messages in loader:
            found += [m for m in messages if m]
            bar.update(len(messages))
    return list(dict.fromkeys(found))  # a video's frames may share one message


def check_images(index: FrameIndex, workers: int = 0, progress: bool = True) -> None:
    """Raise an :class:`ImageReadError` listing every unreadable frame of ``index``."""
    bad = unreadable_frames(index, workers, progress)
    if bad:
        listed = "\n".join(f"  {message}" for message in bad)
        raise ImageReadError(
            f"{len(bad)} of the {len(index)} frames of {index.dataset or 'the index'} under "
            f"{index.root} cannot be read:\n{listed}"
        )
