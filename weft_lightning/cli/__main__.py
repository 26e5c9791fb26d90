"""``python -m weft_lightning.cli`` (as torchrun and SLURM scripts start it) is ``weft``."""

import sys

from weft_lightning.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
