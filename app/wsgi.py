"""`gunicorn app.wsgi:app`: the App configured from the environment.

This module is the server process's entry point, so it also sets the process-wide garbage
collection for a long-lived server: everything loaded at start-up (Flask, gating, the handlers)
is frozen out of the collector, which would otherwise walk all of it, holding the GIL for
milliseconds, every few hundred deliveries. A delivery's payload is freed by reference counting,
so the youngest generation is collected less often too.
"""

import gc

from app import create_app

app = create_app()

gc.collect()
gc.freeze()
gc.set_threshold(10_000, 20, 20)
