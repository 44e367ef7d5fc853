"""The papers' published results, stored as data, and printed beside ours.

Each method plugin may keep the per-AU tables of its paper in a module ``paper`` of its
package (``au_renet/paper.py``): ``TABLES``, a sequence of :class:`PublishedTable`, and
optionally ``paper_rows(method, hparams, data)``, the rows of any stored table that a run
of ``method`` with these model and data hyperparameters stands for (:class:`RowRef`; the
baseline plugin names rows of the RE-Net and hybrid papers, e.g. their ``ResNet18`` and
``ANet``). Nothing is imported from a plugin but that module, found by name.

A :class:`PublishedTable` is one block of a paper's table with a single dataset, protocol,
metric (and shot count): its rows (:class:`PublishedRow`, the method as printed, the
per-AU values and the mean as published). The numbers are transcribed with
:func:`parse_table` from the paper's own layout, so a stored table can be read against the
paper line by line.

``au-lightning cv`` and ``compare`` print "paper", "ours" and their difference per AU
(:func:`side_by_side`) for the stored rows whose dataset, protocol and metric match the run
(:func:`run_setting`, :meth:`PublishedTable.mismatch`). On SynthAU the comparison shows the
shape (which AUs are hard), not the level.

Protocols, as a stored table names them:

- ``3fold``, ``5fold``, ``10fold``: k-fold subject-exclusive cross-validation; a run with
  ``protocol: kfold`` and ``num_folds: k``, or the published lists ``bp4d_3fold`` /
  ``disfa_3fold`` for 3 folds (the papers do not list their subjects);
- ``loso``: leave one subject out;
- ``cross:<dataset>``: trained on ``<dataset>``, tested on the table's dataset (a run with
  ``protocol: cross``, ``dataset`` the training set and ``test_dataset`` the table's);
- anything else (``official``: GFT's own split; ``anet_t``: Chu et al.'s cross-dataset
  features) is stored for reference and no run matches it.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from au_lightning.data.index import AU_SETS, intensity_threshold
from au_lightning.fewshot_results import AdaptationRecord, per_au_accuracy
from au_lightning.registry import METHODS_GROUP, discover
from au_lightning.reports import write_table

__all__ = [
    "CODED_AUS",
    "Comparison",
    "PublishedRow",
    "PublishedTable",
    "RowRef",
    "RunSetting",
    "fewshot_comparisons",
    "paper_report",
    "paper_rows",
    "parse_table",
    "published_tables",
    "run_setting",
    "score_comparisons",
    "side_by_side",
]

#: The AUs each dataset codes, as far as the stored tables use them: a table's AUs must be
#: among its dataset's. GFT: the 12 AUs over 5% base rate of Chu et al. Sec. 4.1 and the 10
#: of Li & Shan Sec. 4.1.4; BP4D+: the 12 BP4D AUs (Yang & Yin Sec. 4.1, Chu et al. Sec. 5.3).
CODED_AUS: dict[str, tuple[int, ...]] = {
    "bp4d": AU_SETS["bp4d"],
    "bp4dplus": AU_SETS["bp4d"],
    "disfa": AU_SETS["disfa"],
    "gft": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "emotionet": AU_SETS["emotionet"],
}

DATASET_NAMES = {
    "bp4d": "BP4D",
    "bp4dplus": "BP4D+",
    "disfa": "DISFA",
    "gft": "GFT",
    "emotionet": "EmotioNet",
}
METRIC_NAMES = {"f1": "F1", "acc": "accuracy", "score": "final score", "event_f1": "event F1"}


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table: the method as printed, its per-AU values in the
    table's AU order (None where the paper prints none) and the mean as published."""

    method: str
    values: tuple[float | None, ...]
    mean: float | None
    note: str = ""
    #: the published mean is not the mean of the printed values (a paper's own error, or a
    #: value cited from another paper that has it): said in ``note``, and tested as such
    mean_differs: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """A block of a paper's table with one dataset, protocol, metric (and shot count).

    Values are as printed: ``scale`` is 100 for tables printed x100 (F1 = 44.5) and 1 for
    fractions (accuracy 0.57), ``decimals`` the digits the paper prints. ``aus`` is empty
    for a table of means only (Ji et al.). ``min_intensity``: the intensity counted as
    present (DISFA: 1 is "> 0", 2 is ">= 2"), None where the labels are occurrences.
    """

    paper: str
    table: str
    where: str
    dataset: str
    protocol: str
    metric: str
    aus: tuple[int, ...]
    rows: tuple[PublishedRow, ...]
    scale: float = 100.0
    decimals: int = 1
    shots: int | None = None
    steps: int | None = None
    min_intensity: int | None = None
    caption: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.values) != len(self.aus):
                raise ValueError(
                    f"{self.paper} {self.table}: row {row.method!r} has {len(row.values)} "
                    f"values for {len(self.aus)} AUs"
                )
        names = [r.method for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.paper} {self.table}: a row name repeats in {names}")

    @property
    def cite(self) -> str:
        """``Table 1, Sec. 4.4``: where the numbers are printed."""
        return f"{self.table}, {self.where}"

    @property
    def describe(self) -> str:
        """``F1 on BP4D, 3fold`` (and the shots)."""
        what = f"{METRIC_NAMES.get(self.metric, self.metric)} on "
        what += f"{DATASET_NAMES.get(self.dataset, self.dataset)}, {self.protocol}"
        if self.shots is not None:
            what += f", {self.shots}-shot"
            if self.steps is not None:
                what += f" after {self.steps} steps"
        return what

    def row(self, method: str) -> PublishedRow:
        for row in self.rows:
            if row.method == method:
                return row
        known = ", ".join(r.method for r in self.rows)
        raise KeyError(f"{self.paper} {self.table} has no row {method!r}; rows: {known}")

    def has_row(self, method: str) -> bool:
        return any(r.method == method for r in self.rows)

    def mismatch(self, setting: RunSetting) -> str | None:
        """Why a run in ``setting`` does not match this table's protocol (dataset, protocol,
        positive-label rule), or None when it does."""
        if setting.dataset != self.dataset:
            return f"dataset {setting.dataset}, the table's is {self.dataset}"
        if self.protocol not in setting.protocols:
            given = max(setting.protocols, key=len, default="none")
            return f"protocol {given}, the table's is {self.protocol}"
        known = None not in (self.min_intensity, setting.min_intensity)
        if known and self.min_intensity != setting.min_intensity:
            return (
                f"intensity >= {setting.min_intensity} counted as present, the table's is "
                f">= {self.min_intensity}"
            )
        return None


def _number(token: str) -> float | None:
    """A value as a paper's text prints it: bold/underline/bracket marks (best, second
    best), a trailing ``*`` or ``.`` dropped; ``-``/``–`` is no value; ``.`` alone is 0
    (a table printing .00 with its zeros dropped, Chu et al. Tables 3/4)."""
    if token == ".":
        return 0.0
    clean = re.sub(r"</?[bu]>|\*\*|[\[\]*]", "", token).rstrip(".")
    if clean in ("-", "–", "—", ""):
        return None
    return float(clean)


def _is_number(token: str) -> bool:
    try:
        _number(token)
    except ValueError:
        return False
    return True


def _column_au(name: str) -> int | None:
    match = re.fullmatch(r"(?:AU)?\s*(\d+)", name)
    return int(match.group(1)) if match else None


def parse_table(
    text: str,
    *,
    transposed: bool = False,
    columns: slice | None = None,
    notes: Mapping[str, str] | None = None,
    mean_differs: Iterable[str] = (),
    **fields: Any,
) -> PublishedTable:
    """A :class:`PublishedTable` from a table transcribed in the paper's layout.

    The first line is the header. Row layout (``transposed=False``): ``Method AU1 ... Avg``,
    then one line per method: the name (any words) and one value per column. Transposed
    (``transposed=True``, e.g. Chu et al., Lee et al.): ``AU <method> <method> ...``, one
    line per AU (``1`` or ``AU1``) and a last line of means (``Avg``/``AVG``); ``columns``
    picks a block of the methods (e.g. the 3-fold protocol's). Values are read by
    :func:`_number`; ``notes`` adds a note to rows by name; ``mean_differs`` names the rows
    whose published mean is not the mean of their printed values (the note says both);
    a row missing some values says which. ``fields`` are the table's other
    :class:`PublishedTable` fields.
    """
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    header, body = lines[0], lines[1:]
    notes = dict(notes or {})
    if transposed:
        names = header[1:]
        aus: list[int] = []
        table: list[list[float | None]] = []
        means: list[float | None] | None = None
        for tokens in body:
            cells = [_number(t) for t in tokens[-len(names) :]]
            label = " ".join(tokens[: -len(names)])
            au = _column_au(label)
            if au is None:
                means = cells
            else:
                aus.append(au)
                table.append(cells)
        picked = range(len(names))[columns or slice(None)]
        rows = tuple(
            PublishedRow(
                names[j],
                tuple(r[j] for r in table),
                None if means is None else means[j],
                notes.pop(names[j], ""),
            )
            for j in picked
        )
    else:
        names = header[1:]
        aus = [a for a in (_column_au(n) for n in names) if a is not None]
        has_mean = len(aus) < len(names)
        built = []
        for tokens in body:
            count = len(names)
            if len(tokens) <= count or not all(_is_number(t) for t in tokens[-count:]):
                raise ValueError(f"row {' '.join(tokens)!r}: expected a name and {count} values")
            cells = [_number(t) for t in tokens[-count:]]
            name = " ".join(tokens[:-count])
            mean = cells[-1] if has_mean else None
            built.append(PublishedRow(name, tuple(cells[: len(aus)]), mean, notes.pop(name, "")))
        rows = tuple(built)
    differs = set(mean_differs)
    if notes or differs - {r.method for r in rows}:
        unknown = sorted(set(notes) | (differs - {r.method for r in rows}))
        raise ValueError(f"notes for rows that are not in the table: {unknown}")
    rows = tuple(_annotated(row, aus, row.method in differs) for row in rows)
    return PublishedTable(aus=tuple(aus), rows=rows, **fields)


def _annotated(row: PublishedRow, aus: Sequence[int], differs: bool) -> PublishedRow:
    """``row`` with notes on the AUs it prints no value for and, when ``differs``, on its
    published mean against the mean of its values."""
    notes = [row.note] if row.note else []
    missing = [f"AU{a}" for a, v in zip(aus, row.values, strict=True) if v is None]
    if missing and len(missing) < len(aus):
        notes.append(f"no value printed for {', '.join(missing)}")
    elif missing:
        notes.append("the mean only")
    if differs:
        printed = [v for v in row.values if v is not None]
        mean = sum(printed) / len(printed)
        notes.append(f"the published mean {row.mean} is not the mean of the values ({mean:.2f})")
    return PublishedRow(row.method, row.values, row.mean, "; ".join(notes), differs)


@dataclass(frozen=True)
class RowRef:
    """A published row that a run stands for: ``paper`` and ``method`` name the row (in any
    of ``tables``, or in every stored table of the paper when empty); our scores are the keys
    ``<prefix><metric>_AU<n>`` (the hybrid's heads: ``cnn/``, ``fused/``)."""

    paper: str
    method: str
    tables: tuple[str, ...] = ()
    prefix: str = ""
    note: str = ""


@dataclass(frozen=True)
class RunSetting:
    """What a run's data configuration says about its protocol: the dataset tested on, the
    protocol names a stored table may use for it, whether it is SynthAU, the intensity
    counted as present (None: not an intensity-coded set, or not said)."""

    dataset: str
    protocols: frozenset[str]
    synthetic: bool = False
    min_intensity: int | None = None


def run_setting(data: Mapping[str, Any]) -> RunSetting:
    """The :class:`RunSetting` of a data module's hyperparameters (``datamodule.hparams``
    or a config's ``data.init_args``)."""
    protocol = data.get("protocol") or "kfold"
    dataset = str(data.get("dataset") or "")
    synth, options = data.get("synth"), data.get("reader_options")
    if protocol == "cross":
        protocols = {f"cross:{dataset}"}
        dataset = str(data.get("test_dataset") or "")
        synth, options = data.get("test_synth"), data.get("test_reader_options")
    elif protocol in ("bp4d_3fold", "disfa_3fold"):
        protocols = {protocol, "3fold"}
    elif protocol == "kfold":
        protocols = {f"{int(data.get('num_folds') or 3)}fold"}
    else:
        protocols = {str(protocol)}
    threshold = (options or {}).get("intensity_threshold")
    try:
        level = None if threshold is None else intensity_threshold(threshold)
    except ValueError:
        level = None
    return RunSetting(
        dataset=dataset,
        protocols=frozenset(protocols),
        synthetic=synth is not None,
        min_intensity=level,
    )


# ---- the stored tables, found in the plugins ------------------------------------------------


def _paper_module(package: str) -> Any | None:
    """``<package>.paper`` imported, or None when the plugin has none or fails to import
    (``au-lightning plugins`` reports that); an error in ``paper.py`` itself is raised."""
    try:
        if importlib.util.find_spec(f"{package}.paper") is None:
            return None
    except Exception:  # the package itself fails to import
        return None
    return importlib.import_module(f"{package}.paper")


def _plugin_packages() -> list[str]:
    values = [p.value for p in discover(METHODS_GROUP).values()]
    return list(dict.fromkeys(v.split(":")[0].split(".")[0] for v in values))


def _package_of(source: object) -> str:
    """The top-level package of a method class or instance, an entry-point name or a
    package name."""
    if isinstance(source, str):
        plugins = discover(METHODS_GROUP)
        if source in plugins:
            return plugins[source].value.split(":")[0].split(".")[0]
        return source.split(".")[0]
    cls = source if isinstance(source, type) else type(source)
    return cls.__module__.split(".")[0]


def published_tables(method_or_plugin: object = None) -> list[PublishedTable]:
    """The tables a plugin stores (by method class or instance, entry-point name such as
    ``renet``, or package such as ``au_renet``); every registered plugin's with None."""
    packages = _plugin_packages() if method_or_plugin is None else [_package_of(method_or_plugin)]
    tables: list[PublishedTable] = []
    for package in packages:
        module = _paper_module(package)
        tables += list(getattr(module, "TABLES", ()) or ())
    return tables


def paper_rows(method: type, hparams: Mapping[str, Any], data: Mapping[str, Any]) -> list[RowRef]:
    """The published rows a run of ``method`` stands for: the
    ``paper.paper_rows(method, hparams, data)`` of its plugin (of the first class in its
    MRO whose package has one, so a subclass in another package keeps its base's rows),
    or none."""
    packages = dict.fromkeys(cls.__module__.split(".")[0] for cls in method.__mro__)
    for package in packages:
        module = _paper_module(package) if package not in ("builtins", "torch") else None
        rows: Callable[..., Iterable[RowRef]] | None = getattr(module, "paper_rows", None)
        if rows is not None:
            return list(rows(method, dict(hparams), dict(data)))
    return []


# ---- side by side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A published row beside our scores: ``ours`` maps AUs to our value (0..1 fractions,
    as the metrics compute them; NaN or absent where we have none), ``ours_mean`` our mean
    for a table of means only."""

    label: str
    table: PublishedTable
    row: PublishedRow
    ours: Mapping[int, float] = field(default_factory=dict)
    ours_mean: float | None = None
    note: str = ""


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _cells(c: Comparison, au: int | None) -> tuple[str, str, str]:
    """``paper``, ``ours`` and ``ours - paper`` of one AU (None: the mean), in the paper's
    units; the mean of a per-AU table is over the AUs both report, and marked ``*`` when
    that is not every AU of the paper's mean."""
    t, digits = c.table, c.table.decimals
    if au is None and t.aus:
        common = [
            (p, c.ours[a])
            for a, p in zip(t.aus, c.row.values, strict=True)
            if p is not None and _finite(c.ours.get(a))
        ]
        if not common:
            return (_fmt(c.row.mean, digits), "", "")
        whole = len(common) == len(t.aus) and _finite(c.row.mean)
        paper = c.row.mean if whole else sum(p for p, _ in common) / len(common)
        ours = t.scale * sum(o for _, o in common) / len(common)
        mark = "" if whole else "*"
        return (_fmt(paper, digits) + mark, _fmt(ours, digits) + mark, _diff(ours - paper, digits))
    if au is None:
        paper, ours = c.row.mean, c.ours_mean
    else:
        paper = c.row.values[t.aus.index(au)] if au in t.aus else None
        ours = c.ours.get(au)
    ours = t.scale * ours if _finite(ours) else None
    diff = ours - paper if ours is not None and paper is not None else None
    return (_fmt(paper, digits), _fmt(ours, digits), _diff(diff, digits))


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _diff(value: float | None, digits: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def side_by_side(comparisons: Sequence[Comparison]) -> list[list[str]]:
    """Rows ``AU | <label> paper | <label> ours | <label> diff ...`` (diff = ours - paper, in
    the paper's units and digits), one per AU of any comparison and a ``mean`` row; the
    header row first, as :func:`au_lightning.reports.write_table` takes them."""
    header = ["AU"]
    for c in comparisons:
        header += [f"{c.label} paper", f"{c.label} ours", f"{c.label} diff"]
    aus = list(dict.fromkeys(a for c in comparisons for a in c.table.aus))
    rows = [header]
    for au in [*aus, None]:
        row = ["mean" if au is None else f"AU{au}"]
        for c in comparisons:
            row += list(_cells(c, au))
        rows.append(row)
    return rows


def _candidates(refs: Sequence[RowRef], tables: Sequence[PublishedTable]):
    for ref in refs:
        for table in tables:
            if table.paper != ref.paper or not table.has_row(ref.method):
                continue
            if ref.tables and table.table not in ref.tables:
                continue
            yield ref, table


def score_comparisons(
    refs: Sequence[RowRef],
    setting: RunSetting,
    scores: Mapping[str, float],
    tables: Sequence[PublishedTable] | None = None,
) -> tuple[list[Comparison], list[str]]:
    """Our mean scores (``f1_AU<n>``, ``<head>/f1_mean`` ..., 0..1) beside every stored row of
    ``refs`` whose table matches ``setting`` and whose metric we have; also a line for each
    row of the run's dataset not compared, and why."""
    tables = published_tables() if tables is None else tables
    out: list[Comparison] = []
    skipped: list[str] = []
    for ref, table in _candidates(refs, tables):
        if table.shots is not None:
            continue
        key = f"{ref.prefix}{table.metric}"
        if not any(k.startswith(f"{key}_") for k in scores):
            continue
        reason = table.mismatch(setting)
        if reason is not None:
            if table.dataset == setting.dataset:
                skipped.append(f"{ref.method} ({table.paper}, {table.cite}): {reason}")
            continue
        ours = {a: float(scores[f"{key}_AU{a}"]) for a in table.aus if f"{key}_AU{a}" in scores}
        mean = scores.get(f"{key}_mean")
        label = ref.method if not ref.prefix else f"{ref.method} ({ref.prefix.rstrip('/')})"
        out.append(
            Comparison(
                label,
                table,
                table.row(ref.method),
                ours,
                None if mean is None else float(mean),
                ref.note,
            )
        )
    return _unique_labels(out), skipped


def fewshot_comparisons(
    runs: Mapping[str, tuple[Sequence[RowRef], RunSetting, Sequence[AdaptationRecord]]],
    tables: Sequence[PublishedTable] | None = None,
) -> tuple[list[Comparison], list[str]]:
    """Few-shot runs (name -> their rows, setting and adaptation records) beside the stored
    accuracy tables of the same dataset, protocol and shots, at the paper's step when the
    records have it (else their last step, said in the note)."""
    tables = published_tables() if tables is None else tables
    out: list[Comparison] = []
    skipped: list[str] = []
    for name, (refs, setting, records) in runs.items():
        if not records:
            continue
        shots = sorted({r.shots for r in records})
        last = max(r.step for r in records)  # the paper's step when a table has none
        for ref, table in _candidates(refs, tables):
            if table.shots not in shots or table.metric != "acc":
                continue
            reason = table.mismatch(setting)
            if reason is not None:
                if table.dataset == setting.dataset:
                    skipped.append(f"{name}: {table.paper}, {table.cite}: {reason}")
                continue
            wanted = table.steps if table.steps is not None else last
            steps = {r.step for r in records if r.shots == table.shots}
            step = wanted if wanted in steps else max(steps)
            note = ref.note
            if step != wanted:
                note = f"{note}; " if note else ""
                note += f"ours after {step} steps, the paper's after {wanted}"
            ours = per_au_accuracy(records, table.shots, step)
            label = f"{table.shots}-shot {name}"
            out.append(Comparison(label, table, table.row(ref.method), ours, None, note))
    return _unique_labels(out), skipped


def _unique_labels(comparisons: list[Comparison]) -> list[Comparison]:
    """Labels that repeat (one row in two tables, or in a table stored per metric as Ji
    et al.'s) get the table's id and metric."""
    counts: dict[str, int] = {}
    for c in comparisons:
        counts[c.label] = counts.get(c.label, 0) + 1
    out = []
    for c in comparisons:
        if counts[c.label] > 1:
            metric = METRIC_NAMES.get(c.table.metric, c.table.metric)
            label = f"{c.label} [{c.table.table}, {metric}]"
            c = Comparison(label, c.table, c.row, c.ours, c.ours_mean, c.note)
        out.append(c)
    return out


def paper_report(
    comparisons: Sequence[Comparison],
    setting: RunSetting,
    skipped: Sequence[str] = (),
    directory: Path | None = None,
) -> str:
    """The text ``cv`` and ``compare`` print: which published rows (paper, table, what),
    the SynthAU note, the :func:`side_by_side` table in markdown, the rows not compared;
    written as ``paper_results.md``/``.csv`` into ``directory`` too. Empty without
    comparisons or skipped rows."""
    if not comparisons and not skipped:
        return ""
    lines = []
    if comparisons:
        lines.append("Published results beside ours (diff = ours - paper, in the paper's units):")
        for c in comparisons:
            note = f" ({c.note})" if c.note else ""
            row_note = f" [{c.row.note}]" if c.row.note else ""
            lines.append(
                f"- {c.label}: {c.table.paper}, {c.table.cite}, row {c.row.method!r}: "
                f"{c.table.describe}{note}{row_note}"
            )
        if any("*" in cell for row in side_by_side(comparisons)[1:] for cell in row):
            lines.append("  (* the mean over the AUs both report, not the paper's mean)")
        if setting.synthetic:
            name = DATASET_NAMES.get(setting.dataset, setting.dataset)
            lines.append(
                f"SynthAU in the {name} layout: the paper's numbers are from real {name}; "
                "compare the shape (which AUs are hard), not the level."
            )
        rows = side_by_side(comparisons)
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        if directory is not None:
            write_table(rows, directory, "paper")
    if skipped:
        lines.append("Published rows of this dataset not compared (protocol differs):")
        lines += [f"- {s}" for s in dict.fromkeys(skipped)]
    return "\n".join(lines)
