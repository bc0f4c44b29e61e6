"""Placing a `gating check` run: event payloads and GITHUB_* variables in, a CheckContext out (pure)."""

from __future__ import annotations

import pytest

from gating.check_context import CheckContext, ContextError, Settings, build_context, is_fork

BASE, HEAD, BEFORE = "b" * 40, "h" * 40, "f" * 40


def pull_event(head_repo: dict | None = None, number: int = 7) -> dict:
    repo = {"full_name": "acme/bot", "fork": False}
    return {"action": "opened", "number": number, "repository": repo,
            "pull_request": {"number": number,
                             "head": {"sha": HEAD, "ref": "tweak", "repo": repo if head_repo is None else head_repo},
                             "base": {"sha": BASE, "ref": "main", "repo": repo}}}


ACTIONS = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/bot", "GITHUB_TOKEN": "ghs_x",
           "GITHUB_API_URL": "https://ghe.example/api/v3", "GITHUB_SERVER_URL": "https://ghe.example",
           "GITHUB_RUN_ID": "99", "GITHUB_SHA": "m" * 40, "GITHUB_STEP_SUMMARY": "/tmp/s.md",
           "GITHUB_OUTPUT": "/tmp/o.txt"}


@pytest.mark.parametrize("env, event, want", [
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event(),
                 dict(event_name="pull_request", head_sha=HEAD, base=BASE, base_ref="main", pull_number=7,
                      fork=False, can_post=True, read_only_reason=None), id="pull_request"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"},
                 pull_event({"full_name": "mallory/bot", "fork": True}),
                 dict(fork=True, can_post=False, head_sha=HEAD), id="fork"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, {**pull_event(), "pull_request": {
        **pull_event()["pull_request"], "head": {"sha": HEAD, "ref": "x", "repo": None}}},
                 dict(fork=True), id="deleted-fork"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "push"},
                 {"ref": "refs/heads/main", "before": BEFORE, "after": HEAD, "repository": {"full_name": "acme/bot"}},
                 dict(event_name="push", head_sha=HEAD, base=BEFORE, base_ref="main", pull_number=None), id="push"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "push"},
                 {"ref": "refs/heads/new", "before": "0" * 40, "after": HEAD}, dict(head_sha=HEAD, base=None),
                 id="push-new-branch"),
    pytest.param({**ACTIONS, "GITHUB_EVENT_NAME": "workflow_dispatch"}, {"inputs": {}},
                 dict(head_sha="m" * 40, base=None), id="workflow_dispatch"),
    pytest.param({}, None, dict(event_name="local", head_sha="HEAD", base=None, repository=None, can_post=False,
                                in_actions=False, api_url="https://api.github.com",
                                read_only_reason="no GitHub repository or token was given, so nothing was posted"),
                 id="local"),
])
def test_context_from_event_and_environment(env: dict, event: dict | None, want: dict):
    ctx = build_context(env, event)
    got = {k: getattr(ctx, k) for k in want}
    assert got == want


def test_actions_details_and_files():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event())
    assert ctx.details_url == "https://ghe.example/acme/bot/actions/runs/99"
    assert (ctx.api_url, ctx.step_summary, ctx.output_file) == ("https://ghe.example/api/v3", "/tmp/s.md", "/tmp/o.txt")
    assert "ghs_x" not in repr(ctx)


def test_explicit_flags_win_over_the_event():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event(), head="abc", base="main",
                        repository="other/repo", pull_number=9, api_url="http://127.0.0.1:1/api/v3/")
    assert (ctx.head_sha, ctx.base, ctx.repository, ctx.pull_number, ctx.api_url) == \
        ("abc", "main", "other/repo", 9, "http://127.0.0.1:1/api/v3")


def test_fork_reason_is_the_sentence_users_read():
    ctx = build_context({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request"}, pull_event({"full_name": "m/bot"}))
    assert ctx.read_only_reason == ("this pull request comes from a fork: its GITHUB_TOKEN is read-only and "
                                    "repository secrets are withheld, so no check run, comment or eval note was written")


def test_no_head_in_actions_is_a_clear_error():
    env = {k: v for k, v in ACTIONS.items() if k != "GITHUB_SHA"}
    with pytest.raises(ContextError, match="no head commit: GITHUB_SHA is unset and the event names none; pass --head"):
        build_context({**env, "GITHUB_EVENT_NAME": "workflow_dispatch"}, {"inputs": {}})


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "latest"}, "baseline 'latest' is not one of: notes, rerun, none"),
    ({"fail_on": "always"}, "fail-on 'always' is not one of: regression, threshold, never"),
    ({"notes": "maybe"}, "notes 'maybe' is not one of: auto, push, local, off"),
    ({"concurrency": 0}, "concurrency must be a positive number, not 0"),
])
def test_settings_refuse_bad_values(kwargs: dict, message: str):
    with pytest.raises(ContextError) as e:
        Settings(**kwargs)
    assert str(e.value) == message


def test_is_fork_by_name_or_flag():
    assert is_fork({"head": {"repo": {"fork": True}}, "base": {"repo": {}}})
    assert not is_fork({"head": {"repo": {"full_name": "a/b"}}, "base": {"repo": {"full_name": "a/b"}}})
    assert isinstance(build_context({}, None), CheckContext)
