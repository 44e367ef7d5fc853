"""The ``au-lightning`` console script.

``fit``, ``validate``, ``test`` and ``predict`` run :class:`AUCLI` (a LightningCLI with any
registered method as ``--model`` and a data module as ``--data``); ``plugins``, ``index`` and
``synth`` are commands of their own. ``main(args=None)`` takes the command line as a list so
tests drive it in-process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, lazy_instance
from jsonargparse.typing import import_object
from lightning.pytorch.cli import LightningCLI

from au_lightning.data import AUDataModule, cached_read
from au_lightning.data.synth import LAYOUTS, generate
from au_lightning.method import AUMethod
from au_lightning.registry import DATASETS_GROUP, METHODS_GROUP, describe, load, resolve

__all__ = ["AUCLI", "main"]

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


class AUCLI(LightningCLI):
    """LightningCLI over every registered AU method and data module; seed 0 by default.

    A method whose class sets ``adapts_at_evaluation`` gets ``trainer.inference_mode=False``,
    so adapting at test time works without the user knowing about inference mode.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            AUMethod,
            AUDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            args=list(args) if args is not None else None,
            run=run,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.set_defaults({"data": lazy_instance(AUDataModule)})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        method = import_object(config.model.class_path)
        if getattr(method, "adapts_at_evaluation", False):
            config.trainer.inference_mode = False


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
        if key in ("--model", "--model.class_path"):
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
        print(f"{title}:")
        for info in describe(group):
            p = info.plugin
            origin = f"{p.distribution or '?'} {p.version or ''}".strip()
            text = f"FAILED TO IMPORT: {info.error}" if info.error else info.description
            print(f"  {p.name:<12} {p.class_path:<50} {origin:<24} {text}")


def index(args: Sequence[str]) -> None:
    """``au-lightning index``: build (and cache) a FrameIndex from a raw dataset, print its
    summary."""
    parser = ArgumentParser(prog="au-lightning index", description=index.__doc__)
    parser.add_argument("--dataset", required=True, help="reader name, e.g. bp4d")
    parser.add_argument("--root", required=True, help="dataset root")
    parser.add_argument("--reader_options", type=dict, default={}, help="reader options")
    parser.add_argument("--cache_dir", type=str | None, default=None, help="cache folder")
    config = parser.parse_args(list(args))
    built = cached_read(
        config.dataset, config.root, directory=config.cache_dir, **config.reader_options
    )
    print(built.summary())


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


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "plugins": plugins,
    "index": index,
    "synth": synth,
}


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    if argv and argv[0] in TRAINER_COMMANDS:
        try:
            argv = [argv[0], *_resolve_model_names(argv[1:])]
        except LookupError as err:
            sys.exit(f"au-lightning: error: {err}")
        AUCLI(args=argv)
        return
    known = ", ".join([*TRAINER_COMMANDS, *COMMANDS])
    given = f"unknown command {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
    sys.exit(f"usage: au-lightning COMMAND [options]\n{given}commands: {known}")


if __name__ == "__main__":
    main()
