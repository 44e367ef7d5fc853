"""The published rows the plain baseline stands for, in other plugins' stored tables.

The baseline has no paper of its own: it is the ``ResNet18`` row of Yang & Yin (RE-Net
Tables 1-3), the ``ANet`` row of Chu et al. (Tables 1/2) and the ``ResNet-50 [55]`` row of
Li & Shan (Table 3, GFT). The rows are named by paper and method (a plugin imports no
other plugin); :func:`au_lightning.published_tables` holds the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from au_lightning import PublishedTable, RowRef

TABLES: tuple[PublishedTable, ...] = ()

_ROWS = {
    "resnet18": [RowRef("Yang & Yin 2020 (RE-Net)", "ResNet18", ("Table 1", "Table 2", "Table 3"))],
    "resnet50": [RowRef("Li & Shan 2021 (MAL)", "ResNet-50 [55]", ("Table 3",))],
    "anet": [RowRef("Chu et al. 2019 (hybrid CNN+LSTM)", "ANet", ("Table 1", "Table 2"))],
}


def paper_rows(method: type, hparams: Mapping[str, Any], data: Mapping[str, Any]) -> list[RowRef]:
    """The baseline's row by its backbone; none with duplication (RE-Net Table 8, whose
    ResNet18 rows the paper's text lost)."""
    if data.get("sampler") == "duplicate":
        return []
    return list(_ROWS.get(str(hparams.get("backbone", "resnet18")), []))
