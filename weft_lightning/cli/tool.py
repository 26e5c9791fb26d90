"""What every ``weft`` command shares: its parser, ``--version`` and the exit convention.

Exit status: 0 done; 1 the input cannot be used (a file, a layout, a config value: the message
names it) or problems were found; 2 the command line itself is wrong (unknown option, bad or
missing value). Errors print one line, ``PROG: error: MESSAGE``, and the project's own warnings
and notes one line each, ``PROG: warning: MESSAGE``; set ``WEFT_DEBUG=1`` for the traceback of
a user error.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

from jsonargparse import ArgumentError, ArgumentParser, DefaultHelpFormatter

from weft_lightning import __version__

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "fail",
    "run_command",
    "tool_parser",
    "user_errors",
    "version_text",
    "warning_lines",
]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def version_text() -> str:
    """``weft-lightning X.Y.Z`` (the package's single version)."""
    return f"weft-lightning {__version__}"


def tool_parser(tool: str, description: str, epilog: str | None = None) -> ArgumentParser:
    """The parser of ``weft TOOL``: raises on errors (reported by :func:`run_command`), keeps
    the description's line breaks and answers ``--version``."""
    parser = ArgumentParser(
        prog=f"weft {tool}",
        description=description,
        epilog=epilog,
        exit_on_error=False,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    return parser


class _Formatter(DefaultHelpFormatter):
    """jsonargparse's help (types and defaults), with descriptions and examples as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user causes (files, layouts, configs, checkpoints): one line, no traceback."""
    from weft_lightning.callbacks.nan_guard import NonFiniteError
    from weft_lightning.checkpoint import CheckpointError
    from weft_lightning.config_files import ConfigFileError
    from weft_lightning.data.catalog import LayoutError
    from weft_lightning.data.dataset import DataFileError
    from weft_lightning.data.image_io import ImageReadingError
    from weft_lightning.data.masks import MaskDecodeError
    from weft_lightning.evaluation.pairing import EvaluationError
    from weft_lightning.experiments.errors import SpecError
    from weft_lightning.models.convert import CheckpointLayoutError

    return (
        NonFiniteError,
        CheckpointError,
        ConfigFileError,
        LayoutError,
        DataFileError,
        ImageReadingError,
        MaskDecodeError,
        EvaluationError,
        SpecError,
        CheckpointLayoutError,
        FileNotFoundError,
        FileExistsError,
    )


def fail(prog: str, message: str, status: int = EXIT_PROBLEMS) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr and return ``status``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


_PACKAGE = Path(__file__).resolve().parents[1]


@contextmanager
def warning_lines(prog: str) -> Iterator[None]:
    """Show the warnings this package raises as one line, ``PROG: warning: MESSAGE``, without
    the source location; other packages' warnings keep their own form. For the ``weft``
    process only: it takes over from any recorder (pytest's) that was set before."""
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
        **_: Any,
    ) -> None:
        if not Path(filename).resolve().is_relative_to(_PACKAGE):
            shown(message, category, filename, lineno, file, line)
            return
        with suppress(OSError):  # the stream is gone: a warning never stops a command
            (file or sys.stderr).write(f"{prog}: warning: {message}\n")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command with the exit convention; ``--help``/``--version`` exits become status 0."""
    try:
        return int(command() or EXIT_OK)
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            return fail(prog, exit_.code)
        return int(exit_.code or EXIT_OK)
    except BrokenPipeError:  # the reader went away (`weft data check X | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PROBLEMS
    except ArgumentError as error:
        from weft_lightning.lightning_cli import argument_problem

        return fail(prog, f"{argument_problem(error)}\n(see `{prog} --help`)", EXIT_USAGE)
    except Exception as error:
        if os.environ.get("WEFT_DEBUG") or not isinstance(error, user_errors()):
            raise
        message = str(error).strip()
        if "Traceback" in message:  # re-raised from a data-loader worker: keep its last line
            message = message.splitlines()[-1]
        return fail(prog, message)
