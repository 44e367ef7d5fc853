"""The published results of Ji et al., *Multiple Transfer Learning and Multi-label Balanced
Training Strategies for Facial AU Detection In the Wild* (CVPR Workshops 2020), as data.

The paper prints no per-AU table: Tables 1 (backbone selection, Sec. 4.4.1) and 2 (the
ablation ladder, Sec. 4.4.2) give accuracy, F1 and their mean, the final score (Sec. 4.3),
each averaged over the 23 EmotioNet challenge AUs, as fractions with 3 digits. Protocol
(Sec. 4.3): 5-fold cross-validation over the ~25K manually annotated EmotioNet images. Both
tables are on p. 4 (the page the reference list gives for [18] and [8, 11], cited by the two
sections). Each table is stored once per metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from au_lightning import PublishedRow, PublishedTable, RowRef

PAPER = "Ji et al. 2020 (multiple transfer, balanced training)"

#: (method, Acc, F1, Avg) as printed
_TABLE_1 = (
    ("ResNet-18", 0.901, 0.364, 0.633),
    ("ResNet-50", 0.905, 0.409, 0.657),
    ("ResNet-152", 0.905, 0.474, 0.690),
)
_TABLE_2 = (
    ("F_face", 0.921, 0.384, 0.652),
    ("F_emotion", 0.925, 0.429, 0.677),
    ("F_face + F_emotion", 0.925, 0.494, 0.710),
    ("Align + F_face + F_emotion", 0.927, 0.527, 0.727),
    ("Align + F_face + F_emotion + balancing", 0.915, 0.552, 0.734),
)
_METRICS = ("acc", "f1", "score")


def _tables(rows, table: str, where: str, caption: str) -> list[PublishedTable]:
    return [
        PublishedTable(
            paper=PAPER,
            table=table,
            where=where,
            dataset="emotionet",
            protocol="5fold",
            metric=metric,
            aus=(),
            rows=tuple(PublishedRow(r[0], (), r[1 + m]) for r in rows),
            scale=1.0,
            decimals=3,
            caption=caption,
            note="the mean over the 23 AUs only; Avg = (Acc + F1) / 2, the final score",
        )
        for m, metric in enumerate(_METRICS)
    ]


TABLES: tuple[PublishedTable, ...] = (
    *_tables(_TABLE_1, "Table 1", "Sec. 4.4.1, p. 4", "Result on Preliminary Backbone Selection"),
    *_tables(_TABLE_2, "Table 2", "Sec. 4.4.2, p. 4", "Ablation Results"),
)

_BACKBONES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "resnet152": "ResNet-152"}


def _checkpoint(path: str) -> dict[str, Any]:
    """The hyperparameters saved in a checkpoint (model's and data module's), or {}."""
    try:
        import torch

        data = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or missing: no row to compare
        return {}
    return {
        "model": dict(data.get("hyper_parameters") or {}),
        "data": dict(data.get("datamodule_hyper_parameters") or {}),
    }


def _view_row(hparams: Mapping[str, Any]) -> str | None:
    """``F_face`` for a view fine-tuned from the identity pretext, ``F_emotion`` from the
    expression pretext; None when the pretext checkpoint cannot be read."""
    task = _checkpoint(str(hparams["pretrained"])).get("data", {}).get("task")
    return {"identity": "F_face", "expression": "F_emotion"}.get(str(task))


def _balanced(model: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    return model.get("loss_weights") == "selective" or data.get("sampler") == "mlros"


def paper_rows(method: type, hparams: Mapping[str, Any], data: Mapping[str, Any]) -> list[RowRef]:
    """- :class:`TransferEnsemble`: ``F_face + F_emotion``, or the last row of Table 2 (the
      full solution) when every view trained balanced (selective loss or MLROS); whether
      the images were aligned is not recorded.
    - :class:`Transfer` from a pretext checkpoint: ``F_face`` or ``F_emotion`` by the
      pretext's task (the paper's view rows train without balancing: said when this run
      balances).
    - :class:`Transfer` from ImageNet or scratch: Table 1's row of its backbone."""
    names = {cls.__name__ for cls in method.__mro__}
    if "TransferEnsemble" in names:
        views = [_checkpoint(str(v)) for v in hparams.get("views") or []]
        balanced = bool(views) and all(_balanced(v["model"], v["data"]) for v in views if v)
        if balanced:
            note = "whether the views' images were aligned is not recorded"
            return [RowRef(PAPER, "Align + F_face + F_emotion + balancing", ("Table 2",), "", note)]
        return [RowRef(PAPER, "F_face + F_emotion", ("Table 2",))]
    if "Transfer" not in names:
        return []
    if isinstance(hparams.get("pretrained"), str):
        row = _view_row(hparams)
        if row is None:
            return []
        note = "this run balances (selective loss or MLROS), the paper's row does not"
        return [RowRef(PAPER, row, ("Table 2",), "", note if _balanced(hparams, data) else "")]
    backbone = _BACKBONES.get(str(hparams.get("backbone")))
    if backbone is None:
        return []
    note = (
        ""
        if hparams.get("pooling", "flatten") == "flatten"
        else "the paper removes the 7x7 pooling"
    )
    return [RowRef(PAPER, backbone, ("Table 1",), "", note)]
