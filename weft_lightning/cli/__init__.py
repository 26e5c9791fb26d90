"""The ``weft`` command: the LightningCLI subcommands and the tools, each tool in its own file.

All of them are jsonargparse parsers and follow one convention (:mod:`weft_lightning.cli.tool`):
``--help`` and ``--version``; errors as one line ``weft[ TOOL]: error: ...``; exit status 0
when done, 1 when the input cannot be used or problems were found, 2 for a wrong command line.
"""

from weft_lightning.cli.main import main

__all__ = ["main"]
