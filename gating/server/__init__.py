"""The gating GitHub App: a thin Flask door that turns webhooks into durable jobs on gating/.

`create_app(settings)` is the only way in (no module-level app except gating.server.wsgi for gunicorn). Flask
is imported inside it, so `gating app jobs` can read the queue without loading a web framework.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gating.errors import USAGE, GatingError
from gating.github import BlobCache, GitHubApp, GitHubError, RateLimited
from gating.monitor.rollup import MemoryRollups, RollupSource
from gating.server.database import errors_of, shown
from gating.server.handlers import JobContext, Registry, blueprints, load_registry
from gating.server.jobs import Job, JobQueue, PermanentError, RetryLater, Worker
from gating.server.schedule import Scheduler
from gating.server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask import Flask


@dataclass
class AppState:
    """Everything a request or a job needs, kept in `app.extensions["gating"]`."""

    settings: Settings
    queue: JobQueue
    registry: Registry
    github: GitHubApp
    worker: Worker = field(init=False)
    scheduler: Scheduler = field(init=False)
    blobs: BlobCache = field(default_factory=BlobCache)
    rollups: RollupSource = field(default_factory=MemoryRollups)  # create_app: the App's RollupStore

    def ensure_started(self) -> None:
        """Start this process's background threads; again after a gunicorn fork, which they do not survive."""
        self.worker.ensure_started()
        self.scheduler.ensure_started()

    def coalesces(self, job: Job) -> bool:
        handler = self.registry.get(job.event, job.handler)
        return bool(handler and handler.coalesce)

    def run_job(self, job: Job) -> None:
        handler = self.registry.get(job.event, job.handler)
        if handler is None:
            raise PermanentError(f"no handler {job.handler!r} for {job.event} in this version of the App")
        try:
            handler.func(JobContext(job, job.payload, self.settings, self.github, self.blobs, queue=self.queue,
                                    rollups=self.rollups))
        except RateLimited as e:  # GitHub said when: not a failed attempt of the job
            raise RetryLater(str(e), e.retry_after, counts=False) from e
        except GitHubError as e:
            if e.status in (401, 403, 404, 410, 422):
                raise PermanentError(str(e)) from e
            raise


def open_queue(settings: Settings) -> JobQueue:
    return JobQueue(settings.queue_location, max_attempts=settings.max_attempts, lease_seconds=settings.lease_seconds,
                    retry_base=settings.retry_base_seconds, retry_max=settings.retry_max_seconds,
                    keep_done_seconds=settings.keep_done_days * 86400,
                    checkpoint_on_commit=settings.job_threads <= 0)  # else the Worker's thread checkpoints


def create_app(settings: Settings | Mapping[str, Any] | None = None, registry: Registry | None = None) -> Flask:
    """Build the App; `settings` is a Settings or a mapping of overrides on top of the environment."""
    from flask import Flask, Response, jsonify
    from werkzeug.exceptions import HTTPException

    from gating.server import telemetry, webhooks
    from gating.server.rollup_store import RollupStore

    if not isinstance(settings, Settings):
        settings = Settings.load(settings)
    settings.check()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.no_audit and not (settings.audit_key_path or settings.audit_key_pem) and settings.signing_handlers():
        logging.getLogger("gating.app").warning("GATING_NO_AUDIT: no audit signing key; merges, deployments and "
                                                "rollbacks go unaudited")
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # gating.github logs each call at DEBUG already
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    github = GitHubApp(settings.app_id, settings.key(), settings.github_api_url)
    try:
        queue = open_queue(settings)
    except errors_of(settings.queue_location) as e:  # the file or the server cannot be reached, or refuses
        name = "GATING_QUEUE_URL" if settings.queue_url else "GATING_DB"
        raise SettingsError([f"{name}: cannot open the job queue {shown(settings.queue_location)}: {e}"]) from None
    state = AppState(settings, queue, registry or load_registry(settings.handler_modules), github)
    try:
        state.rollups = RollupStore(settings.queue_location, checkpoint_on_commit=settings.job_threads <= 0)
    except errors_of(settings.queue_location) as e:
        name = "GATING_QUEUE_URL" if settings.queue_url else "GATING_DB"
        raise SettingsError([f"{name}: cannot open the monitor's roll-ups in {shown(settings.queue_location)}: "
                             f"{e}"]) from None
    state.worker = Worker(state.queue, state.run_job, settings.job_threads, settings.poll_seconds,
                          coalesce=state.coalesces, job_seconds=settings.job_seconds,
                          job_max_memory_mb=settings.job_max_memory_mb)
    state.scheduler = Scheduler(state.queue, state.registry, settings, state.worker.wake)
    app.extensions["gating"] = state
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(telemetry.bp)
    for bp in blueprints(settings.handler_modules):
        app.register_blueprint(bp)
    app.add_url_rule(settings.webhook_path, "webhook", webhooks.receive, methods=["POST"])
    if settings.public_url:  # the pages (README: Pages), imported only when they are served
        from gating.server import pages

        pages.install(app, state)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> tuple[Response, int]:  # JSON errors for clients and for GitHub's delivery log
        return jsonify({"error": e.description}), e.code or 500  # Flask hands over only exceptions with a code

    @app.errorhandler(GatingError)
    def _expected_error(e: GatingError) -> tuple[Response, int]:  # bad input is the client's to fix (400); else ours (500), said why
        return jsonify({"error": str(e)}), 400 if e.exit_code == USAGE else 500

    @app.before_request
    def _before() -> None:
        state.ensure_started()  # after a gunicorn fork, threads start on the first request
        state.worker.request_started()

    @app.teardown_request
    def _after(_exc: BaseException | None) -> None:
        state.worker.request_finished()

    app.wsgi_app = webhooks.FastPath(app.wsgi_app, state)  # type: ignore[method-assign]
    state.worker.ensure_started()
    if settings.job_threads > 0:
        state.scheduler.ensure_started()
    return app
