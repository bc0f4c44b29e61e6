"""The App's settings: one dataclass, loaded from environment variables and an optional mapping.

Names follow Probot where it has one (APP_ID, PRIVATE_KEY_PATH or PRIVATE_KEY, WEBHOOK_SECRET,
WEBHOOK_PATH, LOG_LEVEL), GITHUB_API_URL as in Actions, and GATING_* for the rest. A mapping passed
to `load` (tests, `create_app({...})`) wins over the environment.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gating.errors import GatingError, count
from gating.github import DEFAULT_API_URL, PrivateKeyError, load_private_key
from gating.server.database import POSTGRES_SCHEMES

HANDLER_MODULES = tuple(f"gating.server.handlers.{name}" for name in (
    "approvals", "merge_audit", "deployments", "rollback_command", "alerts", "reevaluate", "rollups", "monitor",
    "canary", "drills", "protection"))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AUDIT_BACKENDS = ("api", "push")
# Handlers that sign audit entries: without the audit key their first job fails.
AUDIT_HANDLERS = ("gating.server.handlers.merge_audit", "gating.server.handlers.deployments",
                  "gating.server.handlers.rollback_command", "gating.server.handlers.alerts",
                  "gating.server.handlers.monitor", "gating.server.handlers.canary", "gating.server.handlers.drills")
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False,
            "": False}


class SettingsError(GatingError):
    """The App cannot start with these settings; `problems` names each variable at fault."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems), problems)
        self.message = f"{count(len(self.problems), 'problem')} in the App's settings"


def _env(name: str, doc: str, default: Any = None, **kw: Any) -> Any:
    meta = {"env": name, "doc": doc}
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata=meta, repr=kw.get("repr", True))
    return field(default=default, metadata=meta, repr=kw.get("repr", True))


@dataclass(frozen=True)
class Settings:
    app_id: str = _env("APP_ID", "the GitHub App's id")
    private_key_path: str | None = _env("PRIVATE_KEY_PATH", "path of the App's private key (.pem)")
    private_key: str | None = _env("PRIVATE_KEY", "the private key itself (PEM, `\\n`-escaped or base64)",
                                   repr=False)
    webhook_secret: str = _env("WEBHOOK_SECRET", "the webhook secret; deliveries without a valid "
                               "X-Hub-Signature-256 are refused", "", repr=False)
    webhook_path: str = _env("WEBHOOK_PATH", "where GitHub posts webhooks", "/webhooks")
    github_api_url: str = _env("GITHUB_API_URL", "REST API base (GitHub Enterprise: https://HOST/api/v3)",
                               DEFAULT_API_URL)
    log_level: str = _env("LOG_LEVEL", "logging level", "INFO")
    db_path: str = _env("GATING_DB", "SQLite file of the job queue (shared by all workers)", "gating-app.sqlite3")
    queue_url: str = _env("GATING_QUEUE_URL", "postgresql://USER:PASSWORD@HOST/DB: keep the job queue (and "
                          "de-duplication, leases, the scheduler, overrides, the monitor's watches and roll-ups) in "
                          "PostgreSQL, shared by App replicas on several hosts (unset: in the SQLite file GATING_DB)",
                          "",
                          repr=False)
    max_body_bytes: int = _env("GATING_MAX_BODY_BYTES", "largest webhook body accepted (413 above)",
                               25 * 1024 * 1024)
    job_threads: int = _env("GATING_JOB_THREADS", "job worker threads per process (0: only enqueue)", 2)
    poll_seconds: float = _env("GATING_POLL_SECONDS", "how often an idle worker looks for due jobs", 1.0)
    lease_seconds: float = _env("GATING_LEASE_SECONDS", "a running job whose worker stopped heart-beating "
                                "this long is picked up again", 60.0)
    max_attempts: int = _env("GATING_MAX_ATTEMPTS", "attempts before a job is kept as failed", 5)
    retry_base_seconds: float = _env("GATING_RETRY_BASE_SECONDS", "first retry delay; doubles each attempt", 5.0)
    retry_max_seconds: float = _env("GATING_RETRY_MAX_SECONDS", "longest retry delay", 600.0)
    keep_done_days: float = _env("GATING_KEEP_DONE_DAYS", "finished jobs (and the delivery ids that "
                                 "de-duplicate redeliveries) are kept this long", 7.0)
    job_seconds: float = _env("GATING_JOB_SECONDS", "wall-clock bound of one job, checked at each GitHub "
                              "call and each file parsed; past it the job is refused and says so (0: none)", 120.0)
    job_max_memory_mb: float = _env("GATING_JOB_MAX_MEMORY_MB", "a job is refused when the App's process holds "
                                    "more resident memory than this, checked at the same points (0: none)", 1024.0)
    manifest_path: str = _env("GATING_MANIFEST", "manifest path in the repository", "gating.yml")
    handler_modules: tuple[str, ...] = _env("GATING_HANDLERS", "comma-separated handler modules",
                                            default_factory=lambda: HANDLER_MODULES)
    # audit trail (README: Audit trail)
    audit_key_path: str | None = _env("GATING_AUDIT_KEY_PATH", "the Ed25519 key that signs audit entries "
                                      "(`gating keygen`; mode 0600)")
    audit_key_pem: str | None = _env("GATING_AUDIT_KEY", "the audit signing key itself (PEM, `\\n`-escaped "
                                     "or base64)", repr=False)
    no_audit: bool = _env("GATING_NO_AUDIT", "1: start without an audit signing key (`gating app serve --no-audit`); "
                          "merges, deployments and rollbacks then go unaudited, their audit jobs failing and "
                          "saying so. Unset, the App refuses to start without a key", False)
    audit_backend: str = _env("GATING_AUDIT_BACKEND", "api (Git Database API) or push (git push of the "
                              "notes ref, for hosts whose API refuses refs/notes/)", "api")
    audit_push_dir: str = _env("GATING_AUDIT_PUSH_DIR", "where the push backend keeps its notes mirrors",
                               "gating-audit-mirrors")
    audit_reconcile_seconds: float = _env("GATING_AUDIT_RECONCILE_SECONDS", "after a merge, how long since the "
                                          "last backfill of merges with no audit entry before another (0: never)",
                                          3600.0)
    audit_schedule_seconds: float = _env("GATING_AUDIT_SCHEDULE_SECONDS", "how often, with no event at all, "
                                         "the App backfills every installed repository (0: never)", 86400.0)
    # pages (README: Pages)
    public_url: str = _env("GATING_PUBLIC_URL", "the App's public base URL (https://gating.example.com): turns on "
                           "its pages and the check runs' links to them (unset: no pages)", "")
    github_url: str = _env("GITHUB_URL", "GitHub's web address, where users sign in (GitHub Enterprise: "
                           "https://HOST)", "https://github.com")
    oauth_client_id: str = _env("GITHUB_CLIENT_ID", "the App's client id (its settings page), for sign-in", "")
    oauth_client_secret: str = _env("GITHUB_CLIENT_SECRET", "the App's client secret, for sign-in", "", repr=False)
    pages_dir: str = _env("GATING_PAGES_DIR", "where the pages keep their index of each repository's notes "
                          "(rebuilt from the notes whenever they move)", "gating-pages")
    # rollback (README: Rollback)
    alerts_token: str = _env("GATING_ALERTS_TOKEN", "bearer token Alertmanager sends to POST /alerts "
                             "(unset: every alert is refused)", "", repr=False)
    # monitoring (README: Monitoring)
    monitor_seconds: float = _env("GATING_MONITOR_SECONDS", "how often the App evaluates the monitor: rules of "
                                  "each deployed system, bakes and rolls back (0: never)", 60.0)
    monitor_token: str = _env("GATING_MONITOR_TOKEN", "bearer token for GET /monitor/status (unset: every "
                              "request is refused)", "", repr=False)
    drill_seconds: float = _env("GATING_DRILL_SECONDS", "how often the App rehearses a rollback to the last "
                                "known-good state of each repository (0: never)", 7 * 86400.0)
    canary_token: str = _env("GATING_CANARY_TOKEN", "bearer token Argo Rollouts' web metric provider and "
                             "Flagger's webhooks send to /canary/analysis and /canary/flagger (unset: every "
                             "request is refused)", "", repr=False)
    otlp_token: str = _env("GATING_OTLP_TOKEN", "bearer token of POST /v1/traces, /v1/metrics and /feedback: "
                           "TOKEN (spans name their repository) or owner/name:TOKEN,... (each token sends for "
                           "its repository only); unset: all telemetry is refused", "", repr=False)
    otlp_max_body_bytes: int = _env("GATING_OTLP_MAX_BODY_BYTES", "largest OTLP export accepted, after "
                                    "decompression (413 above)", 8 * 1024 * 1024)
    monitor_retention_days: float = _env("GATING_MONITOR_RETENTION_DAYS", "minute roll-ups (and the trace ids "
                                         "feedback may name) are kept this long", 35.0)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Environment first, then `overrides` (keys are the variable names or the field names)."""
        env = os.environ if environ is None else environ
        by_env = {f.metadata["env"]: f for f in fields(cls)}
        by_name = {f.name: f for f in fields(cls)}
        raw: dict[str, Any] = {f.name: env[f.metadata["env"]] for f in fields(cls) if f.metadata["env"] in env}
        for k, v in (overrides or {}).items():
            f = by_env.get(k) or by_name.get(k)
            if f is None:
                raise SettingsError([f"unknown setting {k!r}; known: {', '.join(sorted(by_env))}"])
            raw[f.name] = v
        values, problems = {}, []
        for name, v in raw.items():
            f = by_name[name]
            try:
                values[name] = _convert(f.type, v)
            except ValueError:
                problems.append(f"{f.metadata['env']}: expected {f.type}, got {v!r}")
        if problems:
            raise SettingsError(problems)
        return cls(**values)

    def check(self) -> None:
        """Fail closed at start-up: no secret, no App id or no usable key is an error, not a warning."""
        problems = []
        if not self.webhook_secret:
            problems.append("WEBHOOK_SECRET is not set; the App refuses unsigned webhooks, so it needs one")
        if not self.app_id:
            problems.append("APP_ID is not set")
        try:
            self.key()
        except PrivateKeyError as e:
            problems.append(str(e))
        if self.app_id and not self.app_id.isdigit():
            problems.append(f"APP_ID must be the GitHub App's numeric id, got {self.app_id!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.audit_backend not in AUDIT_BACKENDS:
            problems.append(f"GATING_AUDIT_BACKEND must be {' or '.join(AUDIT_BACKENDS)}, got {self.audit_backend!r}")
        if self.audit_key_path or self.audit_key_pem:
            from gating.audit.keys import KeyError_

            try:
                self.audit_key()
            except KeyError_ as e:
                problems.append(f"GATING_AUDIT_KEY_PATH: {e}" if self.audit_key_path else str(e))
        elif not self.no_audit and (signing := self.signing_handlers()):  # merges would go unaudited
            problems.append("no audit signing key: set GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY (`gating keygen`); "
                            f"{', '.join(signing)} sign audit entries. To run without an audit trail, set "
                            "GATING_NO_AUDIT=1 (`gating app serve --no-audit`) or leave them out of GATING_HANDLERS")
        problems += self._handler_problems()
        if self.queue_url and not self.queue_url.startswith(POSTGRES_SCHEMES):
            problems.append("GATING_QUEUE_URL must be a postgresql:// URL (unset: the SQLite file GATING_DB)")
        elif self.queue_url and importlib.util.find_spec("psycopg") is None:
            problems.append("GATING_QUEUE_URL needs psycopg, which is not installed: pip install 'gating[postgres]'")
        folder = os.path.dirname(os.path.abspath(self.db_path))
        if not os.path.isdir(folder):
            problems.append(f"GATING_DB: cannot open the job queue {self.db_path}: the folder {folder} does not exist")
        if not self.webhook_path.startswith("/"):
            problems.append(f"WEBHOOK_PATH must start with '/', got {self.webhook_path!r}")
        if self.public_url:
            if not self.public_url.startswith(("https://", "http://")):
                problems.append(f"GATING_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}")
            if not (self.oauth_client_id and self.oauth_client_secret):
                problems.append("GATING_PUBLIC_URL turns on the pages, which need GITHUB_CLIENT_ID and "
                                "GITHUB_CLIENT_SECRET (the App's settings page) for sign-in")
        if self.max_body_bytes < 1024:
            problems.append("GATING_MAX_BODY_BYTES must be at least 1024")
        problems += otlp_token_problems(self.otlp_token)
        if self.otlp_max_body_bytes < 1024:
            problems.append("GATING_OTLP_MAX_BODY_BYTES must be at least 1024")
        if self.monitor_retention_days <= 0:
            problems.append("GATING_MONITOR_RETENTION_DAYS must be more than 0")
        if problems:
            raise SettingsError(problems)

    def signing_handlers(self) -> list[str]:
        """The handler modules on that sign audit entries."""
        return [h for h in self.handler_modules if h in AUDIT_HANDLERS]

    def _handler_problems(self) -> list[str]:
        """A handler module that cannot be imported, or is not one, stops the App here rather than
        in every worker process gunicorn starts."""
        import importlib

        problems = []
        for name in self.handler_modules:
            try:
                module = importlib.import_module(name)
            except ImportError as e:
                problems.append(f"GATING_HANDLERS: cannot load the handler module {name!r}: {e}")
                continue
            if not callable(getattr(module, "register", None)):
                problems.append(f"GATING_HANDLERS: the handler module {name!r} has no register(registry) function")
        return problems

    @property
    def queue_location(self) -> str:
        """Where the job queue lives: the PostgreSQL URL, or else the SQLite file."""
        return self.queue_url or self.db_path

    def key(self) -> str:
        return load_private_key(self.private_key_path, self.private_key)

    def audit_key(self) -> Ed25519PrivateKey:
        """The audit signing key; a missing or bad key fails the job that needs it, naming the variable."""
        from gating.audit import keys

        if self.audit_key_path:
            return keys.load_private(keys.read_file(self.audit_key_path), self.audit_key_path)
        if not self.audit_key_pem:
            raise keys.KeyError_("no audit signing key: set GATING_AUDIT_KEY_PATH or GATING_AUDIT_KEY")
        text = self.audit_key_pem.replace("\\n", "\n").strip()
        if "-----BEGIN" not in text:
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except ValueError:
                raise keys.KeyError_("GATING_AUDIT_KEY is neither PEM text nor base64-encoded PEM") from None
        return keys.load_private(text.encode("utf-8"), "GATING_AUDIT_KEY")


OTLP_TOKEN_MIN_LENGTH = 16
_BOUND_TOKEN = re.compile(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+):(.*)")


def otlp_tokens(value: str) -> list[tuple[str | None, str]]:
    """GATING_OTLP_TOKEN as (repository or None, token) pairs: `TOKEN` sends for any repository (the
    spans' gating.repository names it), `owner/name:TOKEN` only for that one; entries are comma-separated."""
    out: list[tuple[str | None, str]] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry:
            m = _BOUND_TOKEN.fullmatch(entry)
            out.append((m.group(1), m.group(2).strip()) if m else (None, entry))
    return out


def otlp_token_problems(value: str) -> list[str]:
    return [f"GATING_OTLP_TOKEN: the token{f' for {repo}' if repo else ''} is shorter than "
            f"{OTLP_TOKEN_MIN_LENGTH} characters; use a random one (e.g. `openssl rand -hex 32`)"
            for repo, token in otlp_tokens(value) if len(token) < OTLP_TOKEN_MIN_LENGTH]


def _convert(typ: Any, v: Any) -> Any:
    t = str(typ)
    if isinstance(v, str):
        v = v.strip()
    if t == "int":
        return int(v)
    if t == "float":
        return float(v)
    if t == "bool":
        if isinstance(v, bool):
            return v
        if str(v).lower() not in BOOLEANS:
            raise ValueError(v)
        return BOOLEANS[str(v).lower()]
    if t.startswith("tuple"):
        items = v.split(",") if isinstance(v, str) else list(v)
        return tuple(i.strip() for i in items if i.strip())
    return None if v in (None, "") and "None" in t else str(v)


def documented() -> list[tuple[str, str, Any]]:
    """(variable, meaning, default) for the README and `gating app serve --help`."""
    out = []
    for f in fields(Settings):
        default = f.default_factory() if callable(f.default_factory) else f.default
        out.append((f.metadata["env"], f.metadata["doc"], default))
    return out
