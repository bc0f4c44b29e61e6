"""`gunicorn gating.server.wsgi:app`: the App configured from the environment.

This module is the server process's entry point, so it also sets the process-wide garbage
collection for a long-lived server: everything loaded at start-up (Flask, gating, the handlers)
is frozen out of the collector, which would otherwise walk all of it, holding the GIL for
milliseconds, every few hundred deliveries. A delivery's payload is freed by reference counting,
so the youngest generation is collected less often too.

Settings the App cannot start with end the server with one line naming them.
"""

import gc
import sys

from gating.server import create_app
from gating.server.settings import SettingsError

try:
    app = create_app()
except SettingsError as e:  # one line naming the setting, not a traceback in every worker gunicorn boots
    print(f"gating app: cannot start: {e}", file=sys.stderr, flush=True)
    sys.exit(4)  # gunicorn's "App failed to load": the master stops instead of booting workers again

gc.collect()
gc.freeze()
gc.set_threshold(10_000, 20, 20)
