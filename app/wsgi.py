"""`gunicorn app.wsgi:app`: the App configured from the environment."""

from app import create_app

app = create_app()
