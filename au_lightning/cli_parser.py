"""The argument parser of ``au-lightning``'s trainer commands: no abbreviated options, and a
usage error that starts with the error and the closest valid names, not the usage."""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from typing import Any, NoReturn

from jsonargparse.typing import import_object
from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["AUArgumentParser", "closest_options"]

_REJECTED = re.compile(r"Option '([^']+)' is not accepted")
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")
_GROUP = re.compile(r'Parser key "([^"]+)"')
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")


class AUArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with ``allow_abbrev=False`` (``--trainer.max_epoch`` is an
    error, not ``--trainer.max_epochs``) and a short usage error: the error, the valid
    options closest to the one given (:func:`closest_options`), and where the full list is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        summary = _summary(message)
        lines = [f"error: {summary or message}"]
        suggestions = closest_options(message, parser)
        if suggestions:
            lines.append(f"did you mean: {', '.join(suggestions)}")
        if summary:
            lines += ["details:", *("  " + line for line in message.splitlines())]
        lines.append(f"tip: `{prog} --help` lists every option")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.exit(2)


def closest_options(message: str, parser: Any) -> list[str]:
    """The valid options closest to the unknown one a parse error ``message`` names: an
    option a class does not take (``--data.batchsize``: its ``__init__`` parameters), or
    an unrecognized argument (``--modle``: the parser's options)."""
    rejected, owner = _REJECTED.search(message), _CLASS.search(message)
    if rejected and owner:
        group = _GROUP.search(message)
        prefix = f"--{group.group(1)}." if group else "--"
        names = _init_parameters(owner.group(1))
        return [prefix + n for n in difflib.get_close_matches(rejected.group(1), names, n=3)]
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        given = [t.split("=")[0] for t in unrecognized.group(1).split() if t.startswith("--")]
        found: list[str] = []
        for option in given:
            found += difflib.get_close_matches(option, options, n=3, cutoff=0.7)
        return list(dict.fromkeys(found))
    return []


def _summary(message: str) -> str | None:
    """One line for jsonargparse's multi-line report of an option a class does not take."""
    rejected, owner = _REJECTED.search(message), _CLASS.search(message)
    if not (rejected and owner):
        return None
    group = _GROUP.search(message)
    given = f" (--{group.group(1)}.{rejected.group(1)})" if group else ""
    return f"{owner.group(1)} takes no option {rejected.group(1)!r}{given}"


def _init_parameters(class_path: str) -> list[str]:
    """The keyword parameters of a class's ``__init__``, through the bases it forwards
    ``**kwargs`` to."""
    try:
        cls = import_object(class_path)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        names += [p.name for p in parameters if p.name != "self" and p.kind not in variadic]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return list(dict.fromkeys(names))
