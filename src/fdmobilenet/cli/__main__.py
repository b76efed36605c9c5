"""``python -m fdmobilenet.cli`` (what torchrun runs): the same entry point as the ``fdmobilenet`` script."""

import sys

from . import main

sys.exit(main())
