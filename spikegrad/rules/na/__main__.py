"""``python -m spikegrad.rules.na [--require] [--verbose]``: build NA's compiled CPU kernel now
(:func:`spikegrad.rules.na.cpu.main`)."""

import sys

from spikegrad.rules.na import cpu

sys.exit(cpu.main())
