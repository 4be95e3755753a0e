"""``python -m kvmcore.cli``: the ``kvmcore`` command."""

import sys

from kvmcore.cli.main import main

sys.exit(main())
