"""``weft``: the LightningCLI subcommands (fit, validate, test, predict) and the tools."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from weft_lightning.cli import convert, data, evaluate, experiment, info, synth
from weft_lightning.cli.tool import run_command, version_text, warning_lines
from weft_lightning.lightning_cli import build_cli

#: ``weft NAME ...`` runs ``TOOLS[NAME].main``; each tool module states its ``SUMMARY``.
TOOLS = {
    "synth": synth,
    "eval": evaluate,
    "data": data,
    "info": info,
    "convert": convert,
    "experiment": experiment,
}


def tools_help() -> str:
    """The tools' one-line summaries, printed above the LightningCLI's help."""
    lines = ["Tools (each has its own --help):"]
    lines += [f"  weft {name:<10} {tool.SUMMARY}" for name, tool in TOOLS.items()]
    return "\n".join(lines)


def _lightning(argv: list[str]) -> Callable[[], int]:
    def command() -> int:
        build_cli(argv)
        return 0

    return command


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``weft``; returns the exit status (see :mod:`weft_lightning.cli.tool`).
    Run as the ``weft`` process (``args`` None), the package's warnings are one line each."""
    if args is not None:
        return _dispatch(list(args))
    argv = sys.argv[1:]
    with warning_lines(f"weft {argv[0]}" if argv and argv[0] in TOOLS else "weft"):
        return _dispatch(argv)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in TOOLS:
        return TOOLS[argv[0]].main(argv[1:])
    if "--version" in argv:
        print(version_text())
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(tools_help() + "\n")
        argv = ["--help"]
    return run_command("weft", _lightning(argv))


if __name__ == "__main__":
    sys.exit(main())
