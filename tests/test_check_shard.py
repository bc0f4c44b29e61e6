"""`gating check --shard I/N` and `--merge DIR` end to end: real git over smart HTTP from the GitHub
emulator, answers replayed from cassettes recorded against the local test LLM server, and the merged
check compared byte for byte with the unsharded check of the same pull request.

Two runs can never share a wall clock, so these tests pin the two clocks a report shows (the runs'
start and finish times, the elapsed seconds); everything else is whatever the runs produced.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from check_support import GATING_YML, Harness, answer_prompt, greet_prompt, write_system

from gating.check.context import ContextError, Settings
from gating.check.shard import assign, estimate, merge_stats, parse_spec
from gating.commands.cli import main
from gating.evals.dataset import Case
from gating.evals.runner import run_evals
from gating.git.notes import EVALS_REF
from gating.git.repository import Git
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
from gating.testing.llm_ratelimit import RateLimits
from gating.testing.llm_server import LLMServer

REPLAY_YML = GATING_YML.replace("  target: {type: prompt}\n", "  target: {type: prompt}\n  mode: replay\n")
NOW = "2026-12-02T12:00:00.000Z"


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str
    work: Path
    clone: Git

    def file(self, name: str) -> str:
        p = self.work / name
        return p.read_text(encoding="utf-8") if p.exists() else ""


class Sharded:
    """The emulated repository and `gating check` runs as matrix jobs would make them."""

    def __init__(self, h: Harness):
        self.h = h
        self._n = 0

    def run(self, pr: dict[str, Any], clone: Git, *args: str, fork: bool = False,
            event_name: str = "pull_request", command: str = "check") -> Out:
        h = self.h
        self._n += 1
        work = h.tmp / f"job-{self._n}"
        work.mkdir()
        event = work / "event.json"
        event.write_text(json.dumps(h.event(pr, fork=fork)), encoding="utf-8")
        for k in ("GATING_CACHE_DIR", "GATING_PROVIDER", "GH_TOKEN", "GITHUB_BASE_REF", "RUNNER_TEMP"):
            h.mp.delenv(k, raising=False)
        for k, v in h.env(pr["head"]["sha"], h.token, event, work, event_name).items():
            h.mp.setenv(k, v)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["-C", str(clone.root), command, *(a.replace("WORK", str(work)) for a in args)])
        return Out(rc, out.getvalue(), err.getvalue(), work, clone)

    def unsharded(self, pr: dict[str, Any], *args: str, **kw: Any) -> Out:
        return self.run(pr, self.h.clone(), "--json", "WORK/report.json", "--junit", "WORK/junit.xml", *args,
                        **kw)

    def shards(self, pr: dict[str, Any], n: int, into: Path, *args: str, **kw: Any) -> list[Out]:
        clone = self.h.clone()  # a shard writes no notes: the matrix jobs may as well share a checkout
        into.mkdir(parents=True, exist_ok=True)
        return [self.run(pr, clone, "--shard", f"{i}/{n}", "--shard-out", str(into / f"shard-{i}-of-{n}.json"),
                         *args, **kw) for i in range(1, n + 1)]

    def merge(self, pr: dict[str, Any], into: Path, *args: str, **kw: Any) -> Out:
        return self.run(pr, self.h.clone(), "--merge", str(into), "--json", "WORK/report.json", "--junit",
                        "WORK/junit.xml", *args, **kw)


def _record(llm: LLMServer, root: Path) -> None:
    reader = WorkTree(root)
    run_evals(build_snapshot(reader), reader, env={**llm.env(), "GATING_PROVIDER": "live"}, record=True)


@pytest.fixture
def sh(github, tmp_path: Path, monkeypatch) -> Sharded:
    """acme/tiny-bot in replay mode, its cassettes holding the answers of the base's prompts and of the
    pull requests' (so every run answers the same way), and the clocks pinned."""
    src = write_system(tmp_path / "src")
    (src / "gating.yml").write_text(REPLAY_YML, encoding="utf-8")
    with LLMServer() as llm:
        _record(llm, src)
        for answer, greet in (("no", "hello there"), ("yes", "hello and welcome")):
            (src / "prompts/answer.md").write_text(answer_prompt(answer), encoding="utf-8")
            (src / "prompts/greet.md").write_text(greet_prompt(greet), encoding="utf-8")
            _record(llm, src)
        write_system(src)
        (src / "gating.yml").write_text(REPLAY_YML, encoding="utf-8")
        repo = github.create_repo("acme/tiny-bot", source_dir=src)
        monkeypatch.setattr("gating.evals.runner._now", lambda: NOW)
        monkeypatch.setattr("gating.check.run.time", types.SimpleNamespace(monotonic=lambda: 0.0))
        yield Sharded(Harness(github, repo, llm, tmp_path, monkeypatch))


def _same(a: Out, b: Out) -> None:
    assert (a.rc, a.stdout) == (b.rc, b.stdout)
    assert a.file("report.json") == b.file("report.json")
    assert a.file("junit.xml") == b.file("junit.xml")
    assert a.file("step-summary.md") == b.file("step-summary.md")
    outputs = [o.file("output.txt").replace(str(o.work), "WORK") for o in (a, b)]
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(("change", "verdict"), [
    ({"prompts/answer.md": answer_prompt("no")}, "fail"),  # 10 cases flip: McNemar, regressions, annotations
    ({"prompts/greet.md": greet_prompt("hello and welcome")}, "pass"),  # 2 head cases: a shard of 3 runs none
], ids=["regression", "two-affected-cases"])
def test_merged_shards_make_the_unsharded_report_byte_for_byte(sh: Sharded, change: dict[str, str], verdict: str):
    pr = sh.h.open_pr("change", change, "Change a prompt")
    head, args = pr["head"]["sha"], ("--no-post", "--notes", "local")
    whole = sh.unsharded(pr, *args)
    assert json.loads(whole.file("report.json"))["verdict"] == verdict, whole.stderr
    base = json.loads(whole.file("report.json"))["base"]
    for n in (1, 2, 3):
        into = sh.h.tmp / f"shards-{n}"
        jobs = sh.shards(pr, n, into)
        for i, job in enumerate(jobs, 1):
            assert job.rc == 0, job.stderr
            assert job.stdout.startswith(f"gating / eval: shard {i}/{n}: evaluated ")
            assert f"wrote {into / f'shard-{i}-of-{n}.json'}" in job.stdout
            assert job.file("step-summary.md").startswith(f"## gating / eval: shard {i}/{n}\n")
        parts = [json.loads((into / f"shard-{i}-of-{n}.json").read_text()) for i in range(1, n + 1)]
        heads = [len(p["runs"]["head"]["run"]["cases"]) for p in parts]
        bases = [len(p["runs"]["base"]["run"]["cases"]) for p in parts]
        assert (sum(bases), sum(heads)) == (12, 10 if verdict == "fail" else 2)
        if n == 3 and verdict == "pass":
            assert 0 in heads  # a shard that ran no head case
        merged = sh.merge(pr, into, *args)
        _same(whole, merged)
        assert json.loads(merged.file("report.json"))["notes"]["commits"] == sorted([base, head])
        for commit in (base, head):  # the eval notes the merge stores are the unsharded run's
            note = whole.clone.notes_show(EVALS_REF, commit)
            assert note is not None and merged.clone.notes_show(EVALS_REF, commit) == note


def test_only_the_merge_posts_and_its_check_run_is_the_unsharded_one(sh: Sharded):
    pr = sh.h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    head = pr["head"]["sha"]
    whole = sh.unsharded(pr, "--notes", "off")
    [first] = sh.h.check_runs(head)
    into = sh.h.tmp / "shards"
    sh.shards(pr, 3, into)
    assert sh.h.check_runs(head) == [first]  # the matrix jobs posted nothing
    merged = sh.merge(pr, into, "--notes", "off")
    assert merged.rc == whole.rc == 1
    runs = sh.h.check_runs(head)
    assert len(runs) == 2 and runs[0]["conclusion"] == runs[1]["conclusion"] == "failure"
    shown = [{k: r["output"][k] for k in ("title", "summary", "text")} for r in runs]
    assert shown[0] == shown[1]
    finished = [r.json["output"] for r in sh.h.requests("checks/update") if r.json.get("conclusion")]
    assert len(finished) == 2 and finished[0] == finished[1] and finished[0]["annotations"]


def _partials(sh: Sharded, pr: dict[str, Any], n: int, name: str, *args: str) -> Path:
    into = sh.h.tmp / name
    for job in sh.shards(pr, n, into, *args):
        assert job.rc == 0, job.stderr
    return into


def _edit(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_partial_reports_that_do_not_make_one_check_are_refused_by_name(sh: Sharded):
    pr = sh.h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    three = _partials(sh, pr, 3, "three")
    d = sh.h.tmp / "case"

    def merged(setup: Any) -> Out:
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(three, d)
        setup(d)
        got = sh.merge(pr, d, "--no-post")
        assert got.rc == 2, got.stderr
        return got

    got = merged(lambda d: (d / "shard-2-of-3.json").unlink())
    assert f"shard 2/3 is missing from {d} (it holds 1/3 ({d}/shard-1-of-3.json), 3/3 ({d}/shard-3-of-3.json))" \
        in got.stderr
    assert f"gating: the partial reports in {d} do not make one check" in got.stderr
    assert json.loads(got.file("report.json"))["verdict"] == "error"  # the outputs still say so

    got = merged(lambda d: shutil.copy(d / "shard-1-of-3.json", d / "again.json"))
    assert f"{d}/shard-1-of-3.json: shard 1/3 again ({d}/again.json is shard 1/3 too)" in got.stderr

    two = _partials(sh, pr, 2, "two")
    got = merged(lambda d: shutil.copy(two / "shard-1-of-2.json", d / "shard-1-of-2.json"))
    assert f"{d}/shard-1-of-3.json: shard 1/3, but {d}/shard-1-of-2.json is shard 1/2: they come from different " \
           "matrices" in got.stderr

    got = merged(lambda d: (d / "notes.json").write_text('{"hello": 1}'))
    assert f"{d}/notes.json: not a partial report of `gating check --shard` (schema None)" in got.stderr

    got = merged(lambda d: _edit(d / "shard-3-of-3.json", lambda doc: doc.update(gating="0.0.1")))
    assert f"{d}/shard-3-of-3.json: written by gating 0.0.1, this merge is gating " in got.stderr

    got = merged(lambda d: _edit(d / "shard-2-of-3.json", lambda doc: doc.update(error="RuntimeError: boom")))
    assert f"{d}/shard-2-of-3.json (shard 2/3): did not finish: RuntimeError: boom" in got.stderr

    def overlap(d: Path) -> None:
        one = json.loads((d / "shard-1-of-3.json").read_text())
        case = one["runs"]["base"]["run"]["cases"][0]
        _edit(d / "shard-2-of-3.json", lambda doc: doc["runs"]["base"]["run"]["cases"].append(case))
        return case["id"]

    got = merged(overlap)
    assert f"{d}/shard-2-of-3.json (shard 2/3): base case " in got.stderr
    assert f"is also in {d}/shard-1-of-3.json" in got.stderr

    def dropped(d: Path) -> None:
        _edit(d / "shard-3-of-3.json", lambda doc: doc["runs"]["head"]["run"]["cases"].pop())

    got = merged(dropped)
    assert f"{d}/shard-3-of-3.json: head case " in got.stderr and "is missing (shard 3/3 should have run it)" in got.stderr

    got = merged(lambda d: _edit(d / "shard-1-of-3.json",
                                 lambda doc: doc["runs"]["base"]["run"]["cases"][0].update(score="high")))
    assert f"{d}/shard-1-of-3.json (shard 1/3): its base results cannot be read: TypeError: " in got.stderr

    other = sh.h.open_pr("greet", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer")
    foreign = _partials(sh, other, 3, "foreign")
    got = merged(lambda d: shutil.copy(foreign / "shard-2-of-3.json", d / "shard-2-of-3.json"))
    assert f"{d}/shard-2-of-3.json (shard 2/3): evaluated head {other['head']['sha'][:12]}, this merge evaluates " \
           f"{pr['head']['sha'][:12]}" in got.stderr

    rerun = _partials(sh, pr, 3, "rerun", "--baseline", "rerun")
    got = merged(lambda d: shutil.copy(rerun / "shard-1-of-3.json", d / "shard-1-of-3.json"))
    assert f"{d}/shard-1-of-3.json (shard 1/3): made with baseline 'rerun', this merge uses 'notes'" in got.stderr

    got = sh.merge(pr, sh.h.tmp / "nowhere", "--no-post")
    assert got.rc == 2 and f"--merge {sh.h.tmp / 'nowhere'}: no such directory" in got.stderr


def test_a_refused_merge_completes_the_check_run_as_a_failure_naming_the_file(sh: Sharded):
    pr = sh.h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    d = _partials(sh, pr, 2, "two")
    (d / "shard-1-of-2.json").unlink()
    got = sh.merge(pr, d)
    assert got.rc == 2
    [run] = sh.h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "failure" and run["output"]["title"].startswith("Error: ShardError: shard 1/2 is missing")
    assert f"shard 1/2 is missing from {d} (it holds 2/2 ({d}/shard-2-of-2.json))" in run["output"]["summary"]


def test_a_case_keeps_its_shard_on_both_sides_when_the_pull_request_changes_the_cases(sh: Sharded):
    cases = (sh.h.tmp / "src" / "evals/cases.jsonl").read_text().splitlines()
    kept = [line for line in cases if '"answer-03"' not in line]  # one removed, two added
    added = [json.dumps({"id": f"extra-{i}", "prompt": "greet", "vars": {"name": f"x{i}"},
                         "assert": [{"type": "icontains", "value": "hello"}]}) for i in (1, 2)]
    pr = sh.h.open_pr("cases", {"prompts/greet.md": greet_prompt("hello and welcome"),
                                "evals/cases.jsonl": "\n".join(kept + added) + "\n"}, "New cases")
    d = _partials(sh, pr, 3, "three")
    owner: dict[str, int] = {}
    for i in (1, 2, 3):
        doc = json.loads((d / f"shard-{i}-of-3.json").read_text())
        ran = {side: [c["id"] for c in doc["runs"][side]["run"]["cases"]] for side in ("base", "head")}
        assert set(ran["base"]) | set(ran["head"]) <= set(doc["cases"])
        for cid in doc["cases"]:
            assert owner.setdefault(cid, i) == i
    assert {"answer-03", "extra-1", "extra-2", "greet-1"} <= set(owner)
    whole = sh.unsharded(pr, "--no-post", "--notes", "off")
    _same(whole, sh.merge(pr, d, "--no-post", "--notes", "off"))


def test_a_fork_pull_request_stays_read_only_when_sharded(sh: Sharded):
    pr = sh.h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    whole = sh.unsharded(pr, fork=True)
    d = sh.h.tmp / "fork"
    sh.shards(pr, 2, d, fork=True)
    merged = sh.merge(pr, d, fork=True)
    _same(whole, merged)
    assert sh.h.check_runs(pr["head"]["sha"]) == []
    assert "Nothing was posted to the pull request:** this pull request comes from a fork" in merged.file("step-summary.md")
    # under a privileged event a fork's head is never run, sharded or not
    refused = sh.run(pr, sh.h.clone(), "--shard", "1/2", "--shard-out", "WORK/part.json", fork=True,
                     event_name="pull_request_target")
    assert refused.rc == 2 and "is not evaluated under `pull_request_target`" in refused.stderr
    assert not (refused.work / "part.json").exists() and sh.h.check_runs(pr["head"]["sha"]) == []


def test_assignment_is_balanced_by_cost_and_ignores_where_a_case_sits():
    cost = {f"case-{i:03d}": (i * 37) % 101 + 1 for i in range(200)}
    got = assign(cost, 7)
    assert assign(dict(reversed(list(cost.items()))), 7) == got  # the order of the file never matters
    loads = [sum(c for cid, c in cost.items() if got[cid] == k) for k in range(1, 8)]
    assert max(loads) - min(loads) <= max(cost.values())
    assert sorted(set(got.values())) == list(range(1, 8))
    assert assign({"only": 5}, 3) == {"only": 1} and assign({}, 3) == {}


@pytest.mark.parametrize(("text", "error"), [
    ("2/3", None), ("3/3", None), ("1/1", None),
    ("0/3", "shard 0/3: expected I/N with 1 <= I <= N <= 256"),
    ("4/3", "shard 4/3: expected I/N with 1 <= I <= N <= 256"),
    ("1/300", "shard 1/300: expected I/N with 1 <= I <= N <= 256"),
    ("two", "--shard 'two': expected I/N, e.g. 2/4 (the second of four shards)"),
])
def test_shard_spec(text: str, error: str | None):
    try:
        Settings(shard=parse_spec(text), post=False)
    except ContextError as e:
        assert str(e) == error
    else:
        assert error is None


def test_a_shard_writes_only_its_partial_report():
    for kw in ({"post": True}, {"json_path": "r.json"}, {"junit_path": "j.xml"}, {"notes": "push"}):
        with pytest.raises(ContextError, match="a shard posts nothing and writes only its partial report"):
            Settings(shard=(1, 2), **{"post": False, **kw})
    with pytest.raises(ContextError, match="use one of them"):
        Settings(shard=(1, 2), post=False, merge="d")
    with pytest.raises(ContextError, match="--shard-out is where a shard"):
        Settings(shard_out="x.json")


def test_run_stats_are_summed_and_per_run_values_kept_once():
    a = {"requests": 3, "live": 2, "cache_hits": 1, "replayed": 0, "retries": {"timeout": 1}, "waited_s": 0.5,
         "cassettes_written": {}, "recordings_kept": 2}
    b = {"requests": 4, "live": 4, "cache_hits": 0, "replayed": 0, "retries": {"rate_limit": 2, "timeout": 1},
         "waited_s": 1.25, "cassettes_written": {}, "recordings_kept": 2}
    assert merge_stats([a, b]) == {"requests": 7, "live": 6, "cache_hits": 1, "replayed": 0,
                                   "retries": {"rate_limit": 2, "timeout": 2}, "waited_s": 1.75,
                                   "cassettes_written": {}, "recordings_kept": 2}
    assert list(merge_stats([a, b])) == list(a)


def test_a_base_note_written_after_the_shards_ran_does_not_change_the_merge(sh: Sharded):
    """Another pull request's check re-runs the same base and pushes its note while the matrix runs."""
    pr = sh.h.open_pr("terse", {"prompts/answer.md": answer_prompt("no")}, "Terser answers")
    other = sh.h.open_pr("greet", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer")
    whole = sh.unsharded(pr, "--no-post", "--notes", "off")
    d = _partials(sh, pr, 2, "two")
    # a matrix whose second job is re-run after the note came: the shards took the base two ways
    assert all(job.rc == 0 for job in sh.shards(pr, 2, sh.h.tmp / "split"))
    pushed = sh.unsharded(other, "--no-post", "--notes", "push")
    assert json.loads(pushed.file("report.json"))["notes"]["pushed"] is True
    merged = sh.merge(pr, d, "--no-post", "--notes", "off")
    _same(whole, merged)
    assert "baseline: re-ran base" in merged.stdout and "(no eval note on it)" in merged.stdout
    split = sh.h.tmp / "split"
    late = sh.run(pr, sh.h.clone(), "--shard", "2/2", "--shard-out", str(split / "shard-2-of-2.json"))
    assert late.rc == 0  # this one took the base from the note
    got = sh.merge(pr, sh.h.tmp / "split", "--no-post")
    assert got.rc == 2
    assert f"{sh.h.tmp / 'split'}/shard-2-of-2.json (shard 2/2): has no base results, but this merge needs them" \
        in got.stderr


def test_a_shard_that_fails_leaves_a_partial_report_the_merge_names(sh: Sharded):
    pr = sh.h.open_pr("broken", {"prompts/answer.md": answer_prompt("no"), "evals/cases.jsonl": "{not json\n"},
                      "Break the cases")
    d = sh.h.tmp / "broken"
    jobs = sh.shards(pr, 2, d)
    assert [j.rc for j in jobs] == [2, 2]
    assert "bad eval dataset" in jobs[0].stderr
    doc = json.loads((d / "shard-1-of-2.json").read_text())
    assert doc["error"].startswith("DatasetError: ") and doc["runs"] == {}
    got = sh.merge(pr, d, "--no-post")
    assert got.rc == 2 and f"{d}/shard-1-of-2.json (shard 1/2): did not finish: DatasetError: " in got.stderr


def test_a_pull_request_that_changes_no_llm_system_merges_to_the_same_quick_success(sh: Sharded):
    pr = sh.h.open_pr("docs", {"README.md": "# tiny-bot\n\nMore words.\n"}, "Docs")
    whole = sh.unsharded(pr, "--no-post", "--notes", "off")
    d = _partials(sh, pr, 2, "two")
    assert json.loads((d / "shard-1-of-2.json").read_text())["runs"] == {}
    merged = sh.merge(pr, d, "--no-post", "--notes", "off")
    _same(whole, merged)
    assert merged.rc == 0 and merged.stdout.startswith("gating / eval: No LLM system changes")


def test_more_shards_than_cases_leaves_empty_shards_and_the_same_report(sh: Sharded):
    pr = sh.h.open_pr("greet", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer")
    whole = sh.unsharded(pr, "--no-post", "--notes", "off")
    d = _partials(sh, pr, 13, "thirteen")
    empty = [json.loads((d / f"shard-{i}-of-13.json").read_text()) for i in range(1, 14)]
    empty = [doc for doc in empty if not doc["cases"]]
    assert len(empty) == 1 and {k: len(v["run"]["cases"]) for k, v in empty[0]["runs"].items()} == {"base": 0,
                                                                                                    "head": 0}
    _same(whole, sh.merge(pr, d, "--no-post", "--notes", "off"))


def test_the_fork_patterns_privileged_half_shards_and_merges_on_the_base_checkout(sh: Sharded):
    """`gating collect` in the fork's unprivileged run, then `--from-artifact` with `--shard` in each
    matrix job of the `workflow_run` workflow and with `--merge` in its merge job."""
    h, github = sh.h, sh.h.emu
    fork = github.fork_repo(h.repo, "mallory")
    github.push(fork, "tweak", {"prompts/answer.md": answer_prompt("no")}, "From a fork", user="mallory")
    pr = github.create_pull(h.repo, "mallory:tweak", "main", "From a fork", "mallory")
    collected = h.tmp / "collected"
    h.token = github.read_only_token()
    got = sh.run(pr, h.clone(), "--out", str(collected), command="collect", fork=True)
    assert got.rc == 0, got.stderr
    h.token = github.actions_token()
    payload = github.webhook("workflow_run", "completed", repo=h.repo, number=pr["number"]).payload
    h.event = lambda *_a, **_k: payload  # type: ignore[method-assign]

    def job(*args: str) -> Out:
        clone = h.repo.clone(h.tmp / f"base-{sh._n}", h.token)  # the base branch, never the head
        return sh.run(pr, clone, "--from-artifact", str(collected), *args, event_name="workflow_run")

    d = h.tmp / "parts"
    for i in (1, 2):
        got = job("--shard", f"{i}/2", "--shard-out", str(d / f"shard-{i}-of-2.json"))
        assert got.rc == 0, got.stderr
    assert h.check_runs(pr["head"]["sha"]) == []
    merged = job("--merge", str(d))
    assert merged.rc == 1 and merged.stdout.startswith("gating / eval: Fail: 10 cases regressed"), merged.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["conclusion"] == "failure"


def test_expected_cost_counts_the_prompt_the_variables_repeats_and_judge_calls(tmp_path: Path):
    snap = build_snapshot(WorkTree(write_system(tmp_path)))
    plain = Case("a", "answer", {"n": 1}, asserts=({"type": "icontains", "value": "yes"},))
    size = len((tmp_path / "prompts/answer.md").read_bytes()) + len('{"n": 1}') + 1
    assert estimate(plain, snap, 1) == size
    assert estimate(plain, snap, 3) == 3 * size
    graded = Case("b", "answer", {"n": 1}, asserts=({"type": "icontains", "value": "yes"},
                                                    {"type": "llm-rubric", "value": "polite"}))
    assert estimate(graded, snap, 1) == 2 * size
    longer = Case("c", "answer", {"n": 1, "q": "x" * 100}, asserts=plain.asserts)
    assert estimate(longer, snap, 1) > size


def test_rate_limits_the_shards_met_are_added_up_as_one_key_met_them():
    # the matrix jobs run side by side on one key: together they ran at the sum of their concurrency and
    # request rates and were refused the sum of their 429s; the pauses overlapped (the longest is kept)
    a = {"requests": 9, "retries": {"rate_limit": 2},
         "rate_limit": {"concurrency": 3.5, "limit": 4.0, "requests_per_min": 240, "throttled": 2,
                        "paused_s": 1.0, "provider_limits": {"requests": 5}}}
    b = {"requests": 7, "retries": {"rate_limit": 1},
         "rate_limit": {"concurrency": 2.0, "limit": 2.5, "requests_per_min": None, "throttled": 1,
                        "paused_s": 2.25, "provider_limits": {"requests": 5}}}
    c = {"requests": 3, "retries": {}}  # met no limit
    merged = merge_stats([c, a, b])
    assert merged["rate_limit"] == {"concurrency": 5.5, "limit": 6.5, "requests_per_min": 240, "throttled": 3,
                                    "paused_s": 2.25, "provider_limits": {"requests": 5}, "shards": 2}
    assert merge_stats([c, a])["rate_limit"] == a["rate_limit"]  # one shard's figures are its own
    assert "rate_limit" not in merge_stats([c, c])


def test_a_sharded_check_under_a_rate_limit_says_so_per_shard_and_added_up(github, tmp_path: Path, monkeypatch):
    repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
    with LLMServer(latency=0.02, limits=RateLimits(requests=3, window_s=1.0)) as llm:
        sh = Sharded(Harness(github, repo, llm, tmp_path, monkeypatch))
        pr = sh.h.open_pr("greet", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer")
        into = tmp_path / "limited"
        jobs = sh.shards(pr, 2, into)
        merged = sh.merge(pr, into, "--notes", "off")
    said = r"settled at ~[\d.]+ concurrent(, [\d,]+ requests/min)?; retries \d+ \(the provider's limits: 3 requests per window\)"
    for job in jobs:  # the base's 12 cases, 6 a shard, meet the 3 a second
        assert job.rc == 0 and re.search("rate limited on base: " + said, job.file("step-summary.md")), job.file("step-summary.md")
    [run] = sh.h.check_runs(pr["head"]["sha"])
    assert re.search(r"LLM requests: \d+ \(cache hits 0, replayed 0\) · rate limited on base \(2 shards together\): "
                     + said, run["output"]["summary"]), run["output"]["summary"]
    assert re.search(r"rate limited on base \(2 shards together\): " + said, merged.file("step-summary.md"))
