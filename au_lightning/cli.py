"""The ``au-lightning`` console script.

``fit``, ``validate``, ``test`` and ``predict`` run :class:`AUCLI` (a LightningCLI with any
registered method as ``--model`` and a data module as ``--data``); ``cv`` runs fit and test on
every fold; ``compare``, ``plugins``, ``index``, ``synth``, ``visualize`` (the image each
AU of a checkpoint responds to most) and ``align`` (MTCNN face detection and 5-point
alignment of a folder of images) are commands of their own.
``main(args=None)`` takes the command line as a list so tests drive it in-process.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace, lazy_instance
from jsonargparse.typing import import_object
from lightning.pytorch.cli import LightningCLI

from au_lightning import fewshot_results, published
from au_lightning.align import align_folder
from au_lightning.checkpoints import (
    CheckpointError,
    find_checkpoint,
    is_method,
    method_of,
    read_checkpoint,
)
from au_lightning.cli_parser import AUArgumentParser
from au_lightning.data import (
    AUDataModule,
    DatasetFormatError,
    FoldKey,
    FrameIndex,
    ImageReadError,
    SplitError,
    build_image_cache,
    cached_read,
    resolve_aus,
)
from au_lightning.data.synth import LAYOUTS, generate
from au_lightning.data.verify import check_images
from au_lightning.distributed import spool_spawn_results
from au_lightning.errors import ConfigError
from au_lightning.metrics import mean_over_folds
from au_lightning.registry import (
    DATASETS_GROUP,
    METHODS_GROUP,
    PluginLoadError,
    UnknownPluginError,
    describe,
    load,
    resolve,
)
from au_lightning.visualize import au_visualizations, load_method, to_uint8, write_visualizations

__all__ = ["AUCLI", "main"]

logger = logging.getLogger("au_lightning")

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
#: mistakes in options, names and files: ``main`` prints the message alone (set
#: AU_LIGHTNING_DEBUG=1 for the traceback)
USER_ERRORS = (
    ConfigError,
    DatasetFormatError,
    ImageReadError,
    SplitError,
    FileNotFoundError,
    FileExistsError,
    UnknownPluginError,
    PluginLoadError,
)


class AUCLI(LightningCLI):
    """LightningCLI over every registered AU method and data module; seed 0 by default.

    A method whose class sets ``adapts_at_evaluation`` gets ``trainer.inference_mode=False``,
    so adapting at test time works without the user knowing about inference mode.
    ``--ckpt_path last`` and (except for ``fit``) ``--ckpt_path best`` name the checkpoints
    of the latest run of the same method and fold under ``trainer.default_root_dir``
    (:func:`find_checkpoint`); a checkpoint another method wrote, or one that trained on
    this fold's test subjects, is refused (``--allow_fold_mismatch`` overrides the latter).
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            L.LightningModule,  # AU methods, and modules of a method's other stages
            AUDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_class=AUArgumentParser,
            args=list(args) if args is not None else None,
            run=run,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.set_defaults({"data": lazy_instance(AUDataModule)})
        parser.add_argument(
            "--allow_fold_mismatch",
            type=bool,
            default=False,
            help="evaluate or resume a checkpoint on test subjects it trained or validated "
            "on (a warning instead of the error; the scores are then not held-out)",
        )

    def _parse_ckpt_path(self) -> None:
        """Before Lightning takes the model's hyperparameters from ``--ckpt_path FILE``,
        refuse a file that is not a readable checkpoint, or one another method wrote
        (Lightning would silently swap the configured model for that method)."""
        subcommand = self.config.get("subcommand")
        given = self.config[subcommand].get("ckpt_path") if subcommand else None
        if given in (None, "last", "best"):
            return super()._parse_ckpt_path()
        written_by = method_of(read_checkpoint(given))
        configured = self.config[subcommand].model.class_path
        if written_by is not None and not is_method(written_by, import_object(configured)):
            raise CheckpointError(
                f"--ckpt_path {given} was written by {written_by}, but the model is "
                f"{configured}; use the config of the method that trained it (or --model "
                f"{written_by})"
            )
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        method = import_object(config.model.class_path)
        if getattr(method, "adapts_at_evaluation", False):
            config.trainer.inference_mode = False
        _data_aus_from_model(config)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse wraps an error of a class's __init__ in a multi-line "Does not
            # validate against any of the Union subtypes" report; the cause is the message
            if isinstance(err.__cause__, Exception) and "Does not validate" in str(err):
                raise err.__cause__ from None
            raise

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The Trainer, with rank 0's results of ``ddp_spawn`` passed through a file
        (:class:`SpooledSpawnLauncher`: Lightning's own hangs on results over 64 KiB)."""
        return spool_spawn_results(super().instantiate_trainer(**kwargs))

    def _resolve_checkpoint_alias(self) -> None:
        config = self.config_init[self.subcommand]
        if isinstance(self.datamodule, AUDataModule):
            self.datamodule.allow_fold_mismatch = bool(config.get("allow_fold_mismatch"))
        which = config.get("ckpt_path")
        if which not in ("last", "best"):
            return
        if (which, self.subcommand) == ("best", "fit"):
            raise ConfigError(
                "fit --ckpt_path best: fit resumes a run from its last checkpoint; use "
                "--ckpt_path last, or the path of the checkpoint to resume"
            )
        root = self.trainer.default_root_dir
        method = type(self.model)
        fold = self._fold_of_data()
        found = find_checkpoint(root, which, method, fold)
        if found is None:
            of = f" of a {method.__name__} run" + (f" on {fold.describe()}" if fold else "")
            raise FileNotFoundError(
                f"--ckpt_path {which}: no {which} checkpoint{of} under {root} "
                "(trainer.default_root_dir); give the checkpoint's path instead"
            )
        config["ckpt_path"] = str(found)

    def _fold_of_data(self) -> FoldKey | None:
        """The data's fold, for ``best``/``last``; None for other data modules, and when
        ``predict`` reads its own images and the training data cannot be read here."""
        if not isinstance(self.datamodule, AUDataModule):
            return None
        try:
            return self.datamodule.fold_key()
        except (FileNotFoundError, ConfigError, DatasetFormatError) as err:
            if not (self.subcommand == "predict" and self.datamodule.hparams.get("predict_root")):
                raise
            logger.warning("--ckpt_path: any fold's checkpoint (the data's fold: %s)", err)
            return None

    before_fit = before_validate = before_test = before_predict = _resolve_checkpoint_alias


def _data_aus_from_model(config: Namespace) -> None:
    """Unset data AUs become the model's, and the same AUs spelled differently ("bp4d" and
    its list) are spelled alike, so the two hyperparameter sets agree (a logger refuses
    to merge differing values) and one ``aus`` in a config is enough."""
    model_aus = config.model.get("init_args", Namespace()).get("aus")
    data = config.data.get("init_args") if isinstance(config.data, Namespace) else None
    if model_aus is None or data is None or "aus" not in data:
        return
    if data.aus is None or resolve_aus(data.aus) == resolve_aus(model_aus):
        data.aus = model_aus


def _resolved(spec: str) -> str:
    """The class path of a method given by entry-point name, class name or class path; the
    plugin is imported so the parser knows it. Unregistered dotted paths pass through."""
    try:
        plugin = resolve(METHODS_GROUP, spec)
    except LookupError:
        if "." in spec:
            return spec
        raise
    load(METHODS_GROUP, plugin.name)
    return plugin.class_path


def _resolve_model_names(argv: list[str]) -> list[str]:
    """Rewrite ``--model NAME`` and ``model: NAME`` in config files to full class paths."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key in ("--model", "--model.class_path", "--model.help"):
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            out.append(f"{key}={_resolved(value)}")
        elif key == "--config" and (eq or i + 1 < len(argv)):
            if not eq:
                i += 1
                value = argv[i]
            out.append(f"--config={_config_with_resolved_model(value)}")
        else:
            out.append(arg)
        i += 1
    return out


def _config_with_resolved_model(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        return path
    config = yaml.safe_load(file.read_text()) or {}
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, str):
        config["model"] = {"class_path": _resolved(model)}
    elif isinstance(model, dict) and isinstance(model.get("class_path"), str):
        model["class_path"] = _resolved(model["class_path"])
    else:
        return path
    return yaml.safe_dump(config, sort_keys=False)


def plugins(args: Sequence[str]) -> None:
    """``au-lightning plugins``: every registered method and dataset format."""
    ArgumentParser(prog="au-lightning plugins", description=plugins.__doc__).parse_args(args)
    for title, group in (("methods", METHODS_GROUP), ("dataset formats", DATASETS_GROUP)):
        rows = [
            (
                info.plugin.name,
                info.plugin.class_path,
                f"{info.plugin.distribution or '?'} {info.plugin.version or ''}".strip(),
                f"FAILED TO IMPORT: {info.error}" if info.error else info.description,
            )
            for info in describe(group)
        ]
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
        print(f"{title}:")
        for *columns, text in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), text)


def index(args: Sequence[str]) -> None:
    """``au-lightning index``: build (and cache) a FrameIndex from a raw dataset, print its
    summary; ``--verify true`` decodes every frame once and lists every unreadable one;
    ``--cache_images SIZE`` also decodes every frame, resized to SIZE px, into the decoded
    image cache the data modules read when their ``image_size`` is SIZE."""
    parser = ArgumentParser(prog="au-lightning index", description=index.__doc__)
    parser.add_argument("--dataset", required=True, help="reader name, e.g. bp4d")
    parser.add_argument("--root", required=True, help="dataset root")
    parser.add_argument("--reader_options", type=dict, default={}, help="reader options")
    parser.add_argument("--cache_dir", type=str | None, default=None, help="cache folder")
    size_help = "build the decoded image cache at SIZE px ($AU_LIGHTNING_CACHE/images)"
    parser.add_argument(
        "--cache_images", "--cache-images", type=int | None, default=None, help=size_help
    )
    parser.add_argument("--workers", type=int, default=0, help="decoding processes")
    verify_help = "decode every frame once and list every one that cannot be read"
    parser.add_argument("--verify", type=bool, default=False, help=verify_help)
    config = parser.parse_args(list(args))
    built = cached_read(
        config.dataset, config.root, directory=config.cache_dir, **config.reader_options
    )
    print(built.summary())
    if config.verify:
        check_images(built, config.workers)
        print(f"verified: all {len(built)} frames decode")
    if config.cache_images is not None:
        print(_cache_images(built, config.cache_images, config.workers))


def _cache_images(index: FrameIndex, size: int, workers: int) -> str:
    """Build the decoded image cache of ``index``; say where, how large and how fast."""
    start = time.perf_counter()
    file = build_image_cache(index, size, workers=workers, progress=True)
    rate = len(index) / max(time.perf_counter() - start, 1e-9)
    megabytes = file.stat().st_size / 1e6
    return f"decoded images: {file} ({megabytes:.1f} MB, {len(index)} at {rate:.0f} images/s)"


def synth(args: Sequence[str]) -> None:
    """``au-lightning synth``: write a SynthAU set in a real dataset layout."""
    parser = ArgumentParser(
        prog="au-lightning synth",
        description="Write the SynthAU dataset in a real dataset layout.",
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="bp4d", help="dataset layout")
    parser.add_argument("--out", required=True, help="new or empty output folder")
    parser.add_function_arguments(generate, skip={"layout", "out"})
    config = parser.parse_args(list(args))
    result = generate(**config.as_dict())
    print(f"SynthAU {config.layout} written to {result.root}")


def compare(args: Sequence[str]) -> None:
    """``au-lightning compare BASE OURS``: the few-shot adaptation results of two runs side
    by side (Lee et al. Tables 1-3, Figs. 11 and 14), then, where a run's saved config
    matches the dataset, protocol and shots of a stored published table, the paper's
    accuracy per AU beside the run's (:mod:`au_lightning.published`)."""
    parser = ArgumentParser(prog="au-lightning compare", description=compare.__doc__)
    parser.add_argument("base", help="run or cv directory (or its adaptation.csv): the baseline")
    parser.add_argument("ours", help="run or cv directory (or its adaptation.csv): the method")
    parser.add_argument("--names", type=list[str], default=["base", "ours"], help="column names")
    parser.add_argument("--out", default="comparison", help="output directory")
    config = parser.parse_args(list(args))
    if len(config.names) != 2:
        raise ConfigError(f"--names takes two names (base, ours), got {config.names}")
    runs = {}
    paper_runs = {}
    for name, given in zip(config.names, (config.base, config.ours), strict=True):
        path = Path(given)
        csv = path / "adaptation.csv" if path.is_dir() else path
        if not csv.is_file():
            raise FileNotFoundError(f"{given}: no adaptation.csv (written by a few-shot test)")
        runs[name] = fewshot_results.read_adaptation_csv(csv)
        saved = _saved_run_config(csv.parent)
        if saved is not None:
            method, hparams, data = saved
            refs = published.paper_rows(method, hparams, data)
            paper_runs[name] = (refs, published.run_setting(data), runs[name])
    md, *_ = fewshot_results.write_adaptation_report(runs, Path(config.out), "comparison")
    print(f"written to {config.out}\n{md.read_text()}")
    if paper_runs:
        comparisons, skipped = published.fewshot_comparisons(paper_runs)
        settings = [setting for _, setting, _ in paper_runs.values()]
        text = published.paper_report(comparisons, settings[0], skipped, Path(config.out))
        if text:
            print(text)


def _saved_run_config(directory: Path) -> tuple[type, dict, dict] | None:
    """The method class and the model and data ``init_args`` of the ``config.yaml`` that
    LightningCLI saved for a run (in ``directory``, else the first one below it: a cv
    directory's folds); None when there is none or it names no importable method."""
    found = [directory / "config.yaml"] if (directory / "config.yaml").is_file() else []
    found = found or sorted(directory.rglob("config.yaml"))
    if not found:
        return None
    config = yaml.safe_load(found[0].read_text()) or {}
    model, data = config.get("model"), config.get("data")
    if not isinstance(model, dict) or not isinstance(model.get("class_path"), str):
        return None
    try:
        method = import_object(_resolved(model["class_path"]))
    except (ImportError, AttributeError, LookupError):
        return None
    init = model.get("init_args") or {}
    data_init = (data.get("init_args") or {}) if isinstance(data, dict) else {}
    return method, dict(init), dict(data_init)


def visualize(args: Sequence[str]) -> None:
    """``au-lightning visualize --ckpt_path PATH|best|last``: for each AU of a checkpoint, the
    image that maximizes its output unit (Chu et al. Sec. 6, Eq. 3), as ``AU<n>.png`` and a
    labelled sheet ``aus.png``."""
    parser = ArgumentParser(prog="au-lightning visualize", description=visualize.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint, or best / last of --root")
    parser.add_argument("--root", default=".", help="trainer.default_root_dir for best / last")
    parser.add_argument("--out", default="visualizations", help="output directory")
    size_help = "image side (default: the checkpoint's data crop_size, else 224)"
    parser.add_argument("--size", type=int | None, default=None, help=size_help)
    parser.add_function_arguments(au_visualizations, skip={"model", "num_aus", "size"})
    config = parser.parse_args(list(args))
    path = Path(config.ckpt_path)
    if config.ckpt_path in ("best", "last"):
        found = find_checkpoint(config.root, config.ckpt_path)
        if found is None:
            raise FileNotFoundError(
                f"--ckpt_path {config.ckpt_path}: no {config.ckpt_path} checkpoint of a run "
                f"under {config.root} (--root); give the checkpoint's path instead"
            )
        path = found
    model = load_method(path)
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    data = data.get("datamodule_hyper_parameters") or {}
    options = {k: v for k, v in config.as_dict().items() if k not in ("ckpt_path", "root", "out")}
    options["size"] = options["size"] or data.get("crop_size", 224)
    images = au_visualizations(model, len(model.aus), **options)
    uint8 = to_uint8(images, **{k: data[k] for k in ("mean", "std") if k in data})
    written = write_visualizations(uint8, model.aus, config.out)
    print(f"AU visualizations of {path} ({options['size']} px, {options['steps']} steps) written:")
    print("\n".join(f"  {p}" for p in written))


def align(args: Sequence[str]) -> None:
    """``au-lightning align SRC DST``: detect the face in every image under SRC with MTCNN
    and align it to the 5-point ArcFace template (Ji et al. 2020, Sec. 3.2), writing the
    crops, ``DST/faces.csv`` and ``DST/no_face.csv``."""
    parser = ArgumentParser(prog="au-lightning align", description=align.__doc__)
    parser.add_argument("src", help="folder of images (read recursively)")
    parser.add_argument("dst", help="new or empty output folder")
    parser.add_function_arguments(align_folder, skip={"src", "dst"})
    config = parser.parse_args(list(args))
    report = align_folder(**config.as_dict())
    print(f"{report.faces} faces aligned ({config.size} px) into {config.dst}")
    print(f"{len(report.no_face)} without a face, {len(report.unreadable)} unreadable")
    print(f"table: {report.table}\nnot aligned: {report.table.parent / 'no_face.csv'}")


def _cli(argv: list[str], run: bool = True) -> AUCLI:
    """AUCLI on ``argv`` given as the process's own command line (so LightningCLI does not
    warn about ``args`` next to ``sys.argv``, and a DDP launcher that re-runs ``sys.argv``
    re-runs these arguments, model names already resolved)."""
    with mock.patch.object(sys, "argv", [sys.argv[0], *argv]):
        return AUCLI(run=run)


def cv(args: Sequence[str]) -> None:
    """``au-lightning cv [fit options]``: fit, then test the best checkpoint, on every fold of
    the configured protocol, each fold in ``<trainer.default_root_dir>/cv/<fold>``; then the
    per-AU table of every fold and of the mean over folds in ``<default_root_dir>/cv``, and
    the published rows the method stands for beside ours, where the dataset, protocol and
    metric match (``paper_results.md``, :mod:`au_lightning.published`)."""
    argv = _resolve_model_names(list(args))
    first = _cli(argv, run=False)
    if not hasattr(first.model, "write_cv_report"):
        raise ConfigError(f"cv tests AU methods; {type(first.model).__name__} is not one")
    folds = [fold.name for fold in first.datamodule.folds()]
    out = Path(first.trainer.default_root_dir) / "cv"
    per_fold: dict[str, dict[str, float]] = {}
    run_dirs: dict[str, Path] = {}
    for name in folds:
        fold = [f"--data.fold={name}", f"--trainer.default_root_dir={out / name}"]
        run = _cli([*argv, *fold], run=False)
        run.trainer.fit(run.model, datamodule=run.datamodule)
        best = [c.best_model_path for c in run.trainer.checkpoint_callbacks if c.monitor]
        ckpt = best[0] if best and best[0] else None  # else: the weights fit ended with
        results = run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=ckpt)
        scores = {k: v for loader in results for k, v in loader.items()}  # one per test loader
        per_fold[name] = {
            k.removeprefix("test/").replace("untuned/", "untuned_"): v for k, v in scores.items()
        }
        run_dirs[name] = Path(run.trainer.log_dir or run.trainer.default_root_dir)
    md = first.model.write_cv_report(per_fold, run_dirs, out)
    print(f"cross-validation over {len(folds)} folds, written to {out}\n{md.read_text()}")
    paper = _paper_beside_cv(first.model, first.datamodule, per_fold, out)
    if paper:
        print(paper)


def _paper_beside_cv(
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    per_fold: dict[str, dict[str, float]],
    out: Path,
) -> str:
    """The stored published rows the model stands for, beside the mean over folds (or, for
    a few-shot method, the joined ``adaptation.csv``), where dataset, protocol and metric
    match; written as ``paper_results.md``/``.csv`` in ``out``. Empty when nothing matches."""
    data = dict(datamodule.hparams)
    refs = published.paper_rows(type(model), dict(model.hparams), data)
    if not refs:
        return ""
    setting = published.run_setting(data)
    adaptation = out / "adaptation.csv"
    if adaptation.is_file():
        records = fewshot_results.read_adaptation_csv(adaptation)
        runs = {type(model).__name__: (refs, setting, records)}
        comparisons, skipped = published.fewshot_comparisons(runs)
    else:
        mean = mean_over_folds(list(per_fold.values()))
        comparisons, skipped = published.score_comparisons(refs, setting, mean)
    return published.paper_report(comparisons, setting, skipped, out)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "align": align,
    "compare": compare,
    "cv": cv,
    "plugins": plugins,
    "index": index,
    "synth": synth,
    "visualize": visualize,
}


def main(args: Sequence[str] | None = None) -> None:
    """``au-lightning COMMAND [options]``; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
        elif argv and argv[0] in TRAINER_COMMANDS:
            _cli([argv[0], *_resolve_model_names(argv[1:])])
        else:
            known = ", ".join([*TRAINER_COMMANDS, *COMMANDS])
            given = f"unknown command {argv[0]!r}; " if argv and argv[0][:1] != "-" else ""
            sys.exit(f"usage: au-lightning COMMAND [options]\n{given}commands: {known}")
    except USER_ERRORS as err:
        if os.environ.get("AU_LIGHTNING_DEBUG"):
            raise
        sys.exit(f"au-lightning: error: {_one_line(err)}")


def _one_line(err: BaseException) -> str:
    """The message of a user error; one raised in a DataLoader worker arrives wrapped in the
    worker's traceback ("Caught ImageReadError in DataLoader worker process 0. Original
    Traceback ..."), whose last line holds the message."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    main()
