"""One error root: every expected failure is a GatingError with its exit code, rendered once by each
door; anything else is a bug and shows as one (a traceback, exit 1), never as "bad input"."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from app_support import app_settings, signed

import gating
from gating.audit.entry import EntryError
from gating.audit.keys import KeyError_
from gating.audit.log import AppendError
from gating.check.context import ContextError
from gating.commands.cli import UsageError, main
from gating.errors import FAILED, USAGE, GatingError
from gating.evals.dataset import DatasetError
from gating.evals.providers import ProviderError
from gating.git.repository import Git, GitError
from gating.github import GitHubError
from gating.limits import BudgetExceeded, LimitError
from gating.policy import PolicyError
from gating.rollback.plan import Refusal
from gating.server import create_app
from gating.server.handlers import Registry
from gating.server.jobs import JobQueue, Worker
from gating.server.settings import SettingsError
from gating.system.manifest import ManifestError, Problem

# Exceptions that are not failures a user meets, so not GatingErrors: each says what it is instead.
NOT_USER_FACING = {
    "gating.server.jobs.PermanentError": "tells the job queue not to retry; recorded as the job's error",
    "gating.server.jobs.RetryLater": "tells the job queue when to retry; recorded as the job's error",
    "gating.git.notes.RefConflict": "the audit log's append loop re-reads and retries; AppendError after that",
    "gating.git.notes.TransientError": "the audit log's append loop re-reads and retries; AppendError after that",
}
# Modules that do their work on import (entry points), so the walk below does not import them.
ENTRY_POINTS = {"gating.__main__", "gating.server.wsgi"}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for m in pkgutil.walk_packages(gating.__path__, "gating."):
        if m.name in ENTRY_POINTS or m.name.startswith("gating.testing"):  # the emulator's errors are its own
            continue
        for _name, cls in inspect.getmembers(importlib.import_module(m.name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == m.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_gating_defines_derives_from_the_one_root():
    found = _exception_classes()
    assert len(found) > 25 and set(NOT_USER_FACING) <= set(found)
    outside = sorted(n for n, c in found.items() if not issubclass(c, GatingError) and n not in NOT_USER_FACING)
    assert outside == []
    assert not any(issubclass(found[n], GatingError) for n in NOT_USER_FACING)


def test_no_expected_failure_is_also_a_builtin_error_a_bug_could_raise():
    """`except ValueError` must not catch bad input, nor bad input handling catch a bug."""
    mixed = sorted(n for n, c in _exception_classes().items()
                   if issubclass(c, GatingError) and issubclass(c, (ValueError, RuntimeError, LookupError, OSError)))
    assert mixed == []


def test_every_gating_error_has_a_documented_exit_code():
    for name, cls in _exception_classes().items():
        if issubclass(cls, GatingError):
            assert cls.exit_code in (USAGE, FAILED), name


# -- the CLI ----------------------------------------------------------------------------------------

BUG = """
import sys
import {module} as m
def broken(*args, **kwargs):
    raise {exc}("an internal invariant broke")
m.{attr} = broken
from gating.commands.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("module,attr,exc,args", [
    ("gating.commands.eval", "run_evals", "ValueError", ["eval", "--no-cache"]),
    ("gating.commands.diff", "compute", "KeyError", ["diff", "HEAD", "HEAD"]),
    ("gating.commands.snapshot", "snapshot_at", "RuntimeError", ["snapshot"]),
], ids=["eval-ValueError", "diff-KeyError", "snapshot-RuntimeError"])
def test_a_bug_is_a_traceback_and_exit_1_not_bad_input(example_repo: Git, module, attr, exc, args):
    code = BUG.format(module=module, attr=attr, exc=exc)
    proc = subprocess.run([sys.executable, "-c", code, "-C", str(example_repo.root), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Traceback (most recent call last):\n")
    assert proc.stderr.endswith(f"{exc}: {'an internal invariant broke'!r}\n" if exc == "KeyError"
                                else f"{exc}: an internal invariant broke\n")
    assert "gating: error" not in proc.stderr


def test_a_bug_propagates_out_of_main(example_repo: Git, monkeypatch):
    import gating.commands.eval as eval_command

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(eval_command, "run_evals", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        main(["-C", str(example_repo.root), "eval", "--no-cache"])


@pytest.mark.parametrize("error,code,err", [
    (UsageError("--concurrency must be at least 1, got 0"), 2, "gating: error: --concurrency must be at least 1, "
                                                              "got 0\n"),
    (ManifestError([Problem("gating.yml", 3, 5, "unknown key 'x'")]), 2,
     "gating.yml:3:5: unknown key 'x'\ngating: 1 problem in the LLM system manifest\n"),
    (PolicyError(["approvals[0]: unknown key 'who'", "approvals[1]: no name"]), 2,
     "approvals[0]: unknown key 'who'\napprovals[1]: no name\ngating: 2 problems in the approval rules\n"),
    (DatasetError(["evals/cases.jsonl:1: invalid JSON"]), 2,
     "evals/cases.jsonl:1: invalid JSON\ngating: 1 problem in the eval dataset\n"),
    (SettingsError(["APP_ID is not set"]), 2, "APP_ID is not set\ngating: 1 problem in the App's settings\n"),
    (LimitError("gating.yml", "nested deeper than 64 levels", 7), 2,
     "gating: error: gating.yml:7: nested deeper than 64 levels\n"),
    (GitError(["rev-parse", "v9"], 128, "fatal: bad revision"), 2,
     "gating: error: git rev-parse v9 failed (128): fatal: bad revision\n"),
    (KeyError_("k.pem: not a PEM private key"), 2, "gating: error: k.pem: not a PEM private key\n"),
    (ContextError("--pr must be a number"), 2, "gating: error: --pr must be a number\n"),
    (GitHubError(502, "Bad Gateway", "GET", "/repos/acme/bot"), 1,
     "gating: error: GitHub 502 (GET /repos/acme/bot): Bad Gateway\n"),
    (ProviderError("setup", "no API key for openai: set OPENAI_API_KEY"), 1,
     "gating: error: no API key for openai: set OPENAI_API_KEY\n"),
    (EntryError("the envelope has no signatures"), 1, "gating: error: the envelope has no signatures\n"),
    (AppendError("could not append the merged entry"), 1, "gating: error: could not append the merged entry\n"),
    (BudgetExceeded("evals/cases.jsonl", "the job ran past its 60 s"), 1,
     "gating: error: the job ran past its 60 s, while reading evals/cases.jsonl\n"),
    (Refusal("no_known_good", "the audit log has no known_good entry"), 1, None),
    (Refusal("unknown_target", "no such revision"), 2, None),
    (GatingError("the verdict is inconclusive", exit_code=1), 1, "gating: error: the verdict is inconclusive\n"),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
def test_each_family_of_expected_failure_keeps_its_exit_code_and_says_what_failed(
        git_repo: Git, monkeypatch, capsys, error, code, err):
    import gating.commands.snapshot as snapshot_command

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(snapshot_command, "snapshot_at", failing)
    assert main(["-C", str(git_repo.root), "snapshot"]) == code
    out, got = capsys.readouterr()
    assert out == ""
    assert got == (err if err is not None else f"gating: error: {error}\n")


def test_a_bad_provider_mode_is_bad_input_naming_the_variable(example_repo: Git, monkeypatch, capsys):
    monkeypatch.setenv("GATING_PROVIDER", "cassette")
    assert main(["-C", str(example_repo.root), "eval", "--no-cache"]) == 2
    assert capsys.readouterr().err == ("gating: error: GATING_PROVIDER='cassette' is not one of: auto, live, "
                                       "replay, record\n")


# -- the App ----------------------------------------------------------------------------------------


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    q = JobQueue(str(tmp_path / "jobs.db"), max_attempts=2, retry_base=0.01, retry_max=0.01)
    q.enqueue("d1", "pull_request", "opened", "{}", [("h", None)])
    return q


def test_a_job_meeting_an_expected_failure_records_its_message_without_a_traceback(queue: JobQueue, caplog):
    def run(job):
        raise DatasetError(["evals/cases.jsonl:3: invalid JSON"])

    with caplog.at_level(logging.WARNING, "gating.app.jobs"):
        Worker(queue, run, threads=0).run_one(queue.claim("w"), "w")
    job = queue.get(1)  # input that does not read will not read better later: failed at once, not retried
    assert (job.status, job.last_error) == ("failed", "DatasetError: evals/cases.jsonl:3: invalid JSON")
    [record] = caplog.records
    assert "evals/cases.jsonl:3: invalid JSON" in record.getMessage() and record.exc_info is None


def test_a_job_meeting_a_bug_is_logged_with_its_traceback_and_retried(queue: JobQueue, caplog):
    def run(job):
        raise KeyError("pull_request")

    with caplog.at_level(logging.WARNING, "gating.app.jobs"):
        Worker(queue, run, threads=0).run_one(queue.claim("w"), "w")
    job = queue.get(1)
    assert (job.status, job.last_error) == ("queued", "KeyError: 'pull_request'")
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_delivery_meeting_an_expected_failure_is_answered_with_its_message(tmp_path: Path):
    registry = Registry()

    def key(payload):
        raise LimitError("payload", "pull_request.title is longer than 65536 characters")

    registry.on("pull_request", key=key)(lambda ctx: None)
    app = create_app(app_settings(tmp_path), registry=registry)
    body, headers = signed({"action": "opened"}, "pull_request")
    try:
        r = app.test_client().post("/webhooks", data=body, headers=headers)
        assert (r.status_code, r.json) == (400, {"error": "payload:1: pull_request.title is longer than 65536 "
                                                          "characters"})
        assert app.extensions["gating"].queue.list() == []
    finally:
        app.extensions["gating"].worker.stop()


def test_an_endpoint_meeting_an_expected_failure_answers_with_its_message(tmp_path: Path, caplog):
    app = create_app(app_settings(tmp_path), registry=Registry())

    def bad_input():
        raise LimitError("body", "nested deeper than 64 levels")

    def gone():
        raise GitHubError(502, "Bad Gateway", "GET", "/repos/acme/bot")

    def bug():
        raise ValueError("an internal invariant broke")

    app.add_url_rule("/bad-input", "bad_input", bad_input, methods=["POST"])
    app.add_url_rule("/gone", "gone", gone, methods=["POST"])
    app.add_url_rule("/bug", "bug", bug, methods=["POST"])
    client = app.test_client()
    try:
        r = client.post("/bad-input")
        assert (r.status_code, r.json) == (400, {"error": "body:1: nested deeper than 64 levels"})
        r = client.post("/gone")
        assert (r.status_code, r.json) == (500, {"error": "GitHub 502 (GET /repos/acme/bot): Bad Gateway"})
        with caplog.at_level(logging.ERROR):
            r = client.post("/bug")
        assert r.status_code == 500 and "an internal invariant broke" not in r.get_data(as_text=True)
        assert any(rec.exc_info and rec.exc_info[0] is ValueError for rec in caplog.records)
    finally:
        app.extensions["gating"].worker.stop()
