# The gating GitHub App: `gating app serve` (gunicorn serving gating.server.wsgi:app) as a non-root user.
#
#   docker build -t gating-app .
#   docker run -p 3000:3000 -v gating-data:/data \
#     -e APP_ID=123456 -e WEBHOOK_SECRET=... -e PRIVATE_KEY_PATH=/run/secrets/app.pem \
#     -v "$PWD/app.pem:/run/secrets/app.pem:ro" gating-app
#
# Settings are environment variables (README.md, "Settings"). The job queue lives in /data: keep it on a
# volume so queued work survives a restart.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gating/ gating/
# gating with the `app` extra (Flask, gunicorn) and `postgres` (psycopg, for a shared queue): wheels of it
# and of everything it needs
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[app,postgres]'

FROM python:3.11-slim
# git: the audit trail's push backend speaks git's smart HTTP
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home gating
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    GATING_DB=/data/gating-app.sqlite3 \
    GATING_AUDIT_PUSH_DIR=/data/audit-mirrors
USER gating
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["gating", "app", "serve", "--workers", "2"]
