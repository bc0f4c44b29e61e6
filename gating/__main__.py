import sys

from gating.commands.cli import main

sys.exit(main())
