"""``python -m segzoo ...`` (and ``torchrun --nproc-per-node N -m segzoo train ...``): the CLI."""
import sys

from .cli import main

sys.exit(main())
