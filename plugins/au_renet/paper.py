"""The published F1 tables of Yang & Yin, *RE-Net* (ACCV 2020), as data.

Transcribed from the paper's text (no page numbers in it: cited by section), in the
paper's layout; bracket marks (second best), ``*`` and a stray trailing ``.`` (``42.3.``,
``74.6.``) dropped. Protocols (Sec. 4.1): BP4D and BP4D+ 3-fold subject-exclusive
cross-validation on 12 AUs; DISFA 3-fold on 8 AUs with intensity > 0 as present, except
the rows marked ``*`` (intensity >= 2, Table 2's caption).

Not stored: Tables 4/5 (intensity: ICC and MAE); Table 6 (new AU) and Table 8
(duplication), whose text lost the marks of the removed AU and the ResNet18 rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from au_lightning import PublishedRow, PublishedTable, RowRef, parse_table

PAPER = "Yang & Yin 2020 (RE-Net)"

_STAR = "used intensity >= 2 as positive (the caption's *)"
#: rows cited from other papers whose printed Avg is not the mean of their printed values
#: (the same numbers in Li & Shan's tables): kept as printed
_CITED = "as cited from its own paper"

TABLE_1 = parse_table(
    """
Method AU1 AU2 AU4 AU6 AU7 AU10 AU12 AU14 AU15 AU17 AU23 AU24 Avg
LSVM [27] 23.2 22.8 23.1 27.2 47.1 77.2 63.7 64.3 18.4 33.0 19.4 20.7 35.3
JPML[10] 32.6 25.6 37.4 42.3. 50.5 72.2 74.1 65.7 38.1 40.0 30.4 42.3 45.9
DRML[11] 36.4 41.8 43.0 55.0 67.0 66.3 65.8 54.1 33.2 48.0 31.7 30.0 48.3
EAC-net[23] 39.0 35.2 48.6 76.1 72.9 81.9 86.2 58.8 37.5 59.1 35.9 35.8 55.9
DSIN [12] [51.7] 40.4 56.0 76.1 73.5 79.9 85.4 62.7 37.3 [62.9] 38.8 41.6 58.9
JAA [28] 47.2 44.0 54.9 [77.5] 74.6. 84.0 86.9 61.9 43.6 60.3 42.7 41.9 60.0
OF-Net [29] 50.8 [45.3] [56.6] 75.9 75.9 80.9 [88.4] 63.4 41.6 60.6 39.1 37.8 59.7
LP-Net [30] 43.4 38.0 54.2 77.1 76.7 83.8 87.2 63.3 [45.3] 60.5 48.1 54.2 61.0
SRERL [13] 46.9 [45.3] 55.6 77.1 78.4 83.5 87.6 63.9 52.2 63.9 [47.1] [53.3] [62.9]
ResNet18 44.5 45.1 51.1 81.2 76.8 [87.6] 86.8 [67.9] 44.2 57.5 42.0 30.8 59.6
Ours 57.7 59.0 66.9 76.3 [77.0] 88.9 89.8 70.9 42.0 62.8 44.8 49.3 65.5
""",
    paper=PAPER,
    table="Table 1",
    where="Sec. 4.4",
    dataset="bp4d",
    protocol="3fold",
    metric="f1",
    caption="F1 scores in terms of 12 AUs ... on the BP4D database",
    notes={"LSVM [27]": _CITED, "DRML[11]": _CITED, "EAC-net[23]": _CITED},
    mean_differs=("LSVM [27]", "DRML[11]", "EAC-net[23]"),
)

TABLE_2 = parse_table(
    """
Method AU1 AU2 AU4 AU6 AU9 AU12 AU25 AU26 Avg
LSVM [27] 10.8 10.0 21.8 15.7 11.5 70.4 12.0 22.1 21.8
DRML [11] 17.3 17.7 37.4 29.0 10.7 37.7 38.5 20.1 26.7
EAC-net [23] 41.5 26.4 66.4 50.7 80.5 89.3 88.9 15.6 48.5
DSIN [12] 42.4 39.0 [68.4] 28.6 46.8 70.8 90.4 42.2 53.6
JAA [28] * [43.7] [46.2] 56.0 41.4 44.7 69.6 88.3 58.4 [56.0]*
OF-Net [29] 30.9 34.7 63.9 44.5 31.9 [78.3] 84.7 [60.5] 53.7
LP-Net [30]* 29.9 24.7 72.7 46.8 49.6 72.9 [93.8] 65.0 56.9*
SRERL [13] * 45.7 47.8 59.6 47.1 45.6 73.5 84.3 43.6 55.9*
ResNet18 31.3 33.7 48.7 45.5 33.3 68.6 94.3 48.1 50.4
Ours 38.8 31.1 57.2 [50.1] [50.2] 75.5 86.6 50.6 55.0
""",
    paper=PAPER,
    table="Table 2",
    where="Sec. 4.4",
    dataset="disfa",
    protocol="3fold",
    metric="f1",
    min_intensity=1,
    caption="F1 scores in terms of 8 AUs ... on DISFA dataset",
    notes={
        "DRML [11]": _CITED,
        "EAC-net [23]": _CITED,
        "JAA [28] *": _STAR,
        "LP-Net [30]*": _STAR,
        "SRERL [13] *": _STAR,
    },
    mean_differs=("DRML [11]", "EAC-net [23]"),
)

TABLE_3 = parse_table(
    """
Method AU1 AU2 AU4 AU6 AU7 AU10 AU12 AU14 AU15 AU17 AU23 AU24 Avg
ResNet18 34.6 34.6 33.1 84.9 87.0 90.0 88.9 80.4 53.3 38.7 54.7 13.4 57.8
Ours 37.6 33.7 37.1 85.8 89.2 90.7 89.3 80.6 63.0 46.0 55.2 33.5 61.8
""",
    paper=PAPER,
    table="Table 3",
    where="Sec. 4.4",
    dataset="bp4dplus",
    protocol="3fold",
    metric="f1",
    caption="F1 scores in terms of 12 AUs are reported on the BP4D+ dataset",
)

#: Table 7 prints the average F1 only, with the column "AU relation applied to"
TABLE_7 = PublishedTable(
    paper=PAPER,
    table="Table 7",
    where="Sec. 4.6",
    dataset="bp4d",
    protocol="3fold",
    metric="f1",
    aus=(),
    rows=tuple(
        PublishedRow(method, (), mean, f"AU relation applied to: {applied}")
        for method, applied, mean in (
            ("JPML [10]", "image patch", 45.9),
            ("DRML [11]", "image patch", 48.3),
            ("DSIN [12]", "deep features", 58.9),
            ("SRERL[13]", "deep features", 62.9),
            ("ResNet18", "none", 59.6),
            ("Ours", "model's parameters", 65.5),
            ("Ours+ learnable", "model's parameters", 63.7),
        )
    ),
    caption="F1-scores of different methods with AU relation ... on the BP4D dataset",
)

TABLES: tuple[PublishedTable, ...] = (TABLE_1, TABLE_2, TABLE_3, TABLE_7)


def paper_rows(method: type, hparams: Mapping[str, Any], data: Mapping[str, Any]) -> list[RowRef]:
    """RE-Net with the fixed graph: the ``Ours`` rows of Tables 1-3; with the learnable graph,
    Table 7's ``Ours+ learnable``. None for intensity, new AUs (Table 6) or duplication
    (Table 8), whose numbers are not stored."""
    if "RENetIntensity" in {cls.__name__ for cls in method.__mro__}:
        return []
    if hparams.get("unseen_aus"):
        return []
    if data.get("sampler") == "duplicate":
        return []
    if hparams.get("graph") == "learnable":
        return [RowRef(PAPER, "Ours+ learnable", ("Table 7",))]
    return [RowRef(PAPER, "Ours", ("Table 1", "Table 2", "Table 3"))]
