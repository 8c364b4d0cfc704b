"""``python -m posfast``: the `posfast` command."""
import sys

from .cli import main

sys.exit(main())
