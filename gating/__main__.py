import sys

from gating.cli import main

sys.exit(main())
