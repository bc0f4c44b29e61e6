"""`gunicorn app.wsgi:app` from a checkout of this repository: the App is gating.server.wsgi.

Installed, the App is always loaded by its package name (`gating app serve` runs
`gunicorn gating.server.wsgi:app`), so an `app` package or module of anyone's own cannot stand in for it;
this file is not part of the wheel.
"""

from gating.server.wsgi import app

__all__ = ["app"]
