"""``python -m posfast.cli``: the `posfast` command."""
import sys

from . import main

sys.exit(main())
