"""The ``au-lightning`` console script.

``main(args=None)`` takes the command line as a list so tests drive it in-process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from jsonargparse import ArgumentParser

from au_lightning.data.synth import LAYOUTS, generate

__all__ = ["main"]


def synth(args: Sequence[str]) -> None:
    """``au-lightning synth``: write a SynthAU set in a real dataset layout."""
    parser = ArgumentParser(
        prog="au-lightning synth",
        description="Write the SynthAU dataset in a real dataset layout.",
        exit_on_error=True,
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="bp4d", help="dataset layout")
    parser.add_argument("--out", required=True, help="new or empty output folder")
    parser.add_function_arguments(generate, skip={"layout", "out"})
    config = parser.parse_args(list(args))
    result = generate(**config.as_dict())
    print(f"SynthAU {config.layout} written to {result.root}")


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {"synth": synth}


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        given = f"unknown command {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        sys.exit(f"usage: au-lightning COMMAND [options]\n{given}commands: {known}")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
