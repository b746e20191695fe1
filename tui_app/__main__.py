"""``python -m tui_app`` is the same as the ``tui-app`` command."""

import sys

from .cli import main

sys.exit(main())
