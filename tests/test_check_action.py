"""action.yml and the workflows: the inputs, outputs and pins users rely on, and the composite's
`gating check` step run for real (bash, the installed `gating` console script, the GitHub emulator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from check_support import Harness, clean_env, greet_prompt, parse_outputs, write_system
from ruamel.yaml import YAML

from gating.about import action_ref
from gating.testing.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def action() -> dict:
    return load(ROOT / "action.yml")


def step(action: dict, step_id: str) -> dict:
    return next(s for s in action["runs"]["steps"] if s.get("id") == step_id)


def test_action_inputs_outputs_and_branding(action: dict):
    inputs = action["inputs"]
    assert {k: v.get("default") for k, v in inputs.items()} == {
        "config": "gating.yml", "github-token": "${{ github.token }}", "concurrency": "", "baseline": "notes",
        "fail-on": "regression", "on-error": "fail", "replay": "false", "comment": "false", "working-directory": ".",
        "args": "", "mode": "check", "artifact-name": "gating-collect", "shard": "", "merge": "false",
        "shard-artifact": "gating-shard"}
    assert {k: v["value"] for k, v in action["outputs"].items()} == {
        name: f"${{{{ steps.check.outputs.{name} }}}}"
        for name in ("verdict", "conclusion", "report-json", "junit", "check-run-id", "shard-report")}
    assert action["branding"] == {"icon": "shield", "color": "purple"}
    assert action["runs"]["using"] == "composite"
    assert not [k for k in inputs if "key" in k.lower()], "provider keys travel only through env"


def test_action_pins_python_installs_itself_and_never_splices_inputs_into_scripts(action: dict):
    setup = step(action, "python")
    assert PINNED.match(setup["uses"]) and setup["uses"].startswith("actions/setup-python@")
    assert re.fullmatch(r"3\.11\.\d+", setup["with"]["python-version"])
    install = next(s for s in action["runs"]["steps"] if s.get("name") == "Install gating")
    assert install["env"]["GATING_ACTION_PATH"] == "${{ github.action_path }}"
    assert '--no-deps --no-build-isolation --no-compile "$GATING_ACTION_PATH"' in install["run"]
    assert install["env"]["GATING_WHEELS_CACHED"] == "${{ steps.wheels.outputs.cache-hit }}"
    for s in action["runs"]["steps"]:
        if "run" in s:
            assert "${{" not in s["run"], f"step {s.get('name')!r} splices an expression into its script"
        if "uses" in s:
            assert PINNED.match(s["uses"]), s["uses"]
    assert set(step(action, "check")["env"]) == {"GITHUB_TOKEN", "INPUT_CONFIG", "INPUT_CONCURRENCY",
                                                 "INPUT_BASELINE", "INPUT_FAIL_ON", "INPUT_ON_ERROR", "INPUT_COMMENT",
                                                 "INPUT_REPLAY", "INPUT_ARGS", "INPUT_MODE", "INPUT_SHARD",
                                                 "INPUT_MERGE"}


def test_example_workflow_has_the_right_permissions_and_no_paths_filter():
    wf = load(ROOT / "examples" / "workflows" / "gating.yml")
    assert wf["permissions"] == {"checks": "write", "contents": "write", "pull-requests": "read"}
    assert "pull_request" in wf["on"] and not (wf["on"]["pull_request"] or {})  # no paths: filter
    steps = wf["jobs"]["eval"]["steps"]
    checkout = steps[0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["fetch-depth"] == 0
    gating = next(s for s in steps if s.get("id") == "gating")
    assert set(gating["env"]) == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert set(gating["with"]) <= set(load(ROOT / "action.yml")["inputs"])
    for s in steps:
        if "uses" in s and s is not gating:
            assert PINNED.match(s["uses"]), s["uses"]


def test_the_projects_own_workflow_runs_the_local_action_on_the_example():
    wf = load(ROOT / ".github" / "workflows" / "gating.yml")
    steps = wf["jobs"]["example"]["steps"]
    local = next(s for s in steps if s.get("uses") == "./")
    assert local["env"] == {"GATING_PROVIDER": "replay"}
    assert set(local["with"]) <= set(load(ROOT / "action.yml")["inputs"])


def _expand(text: str, values: dict[str, str]) -> str:
    return EXPR.sub(lambda m: values[m.group(1)], text)


def test_the_composite_check_step_runs_gating_check_with_the_inputs(github, tmp_path: Path, monkeypatch,
                                                                     action: dict):
    """The real console script, through the action's own bash, against the emulator."""
    with LLMServer() as llm:
        repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
        h = Harness(github, repo, llm, tmp_path, monkeypatch)
        pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
        clone = h.clone()
        runner_temp = tmp_path / "runner-temp"
        runner_temp.mkdir()
        (runner_temp / "gating-venv").symlink_to(Path(sys.prefix))  # what the install step builds
        event = tmp_path / "event.json"
        event.write_text(__import__("json").dumps(h.event(pr)), encoding="utf-8")
        env = {**clean_env(), **h.env(pr["head"]["sha"], h.token, event, tmp_path), "RUNNER_TEMP": str(runner_temp)}
        (tmp_path / "step-summary.md").touch()
        values = {f"inputs.{k}": str(v.get("default") or "") for k, v in action["inputs"].items()}
        values["inputs.github-token"] = h.token
        check = step(action, "check")
        env.update({k: _expand(str(v), values) for k, v in check["env"].items()})
        cwd = clone.root / _expand(check["working-directory"], values)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", check["run"]],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gating / eval: Pass: the 1 threshold met")
    outputs = parse_outputs((tmp_path / "output.txt").read_text(encoding="utf-8"))
    assert set(action["outputs"]) <= set(outputs)
    assert outputs["report-json"] == str(runner_temp / "gating-report" / "report.json")
    assert os.path.isfile(outputs["report-json"]) and os.path.isfile(outputs["junit"])
    [run] = github.list_check_runs(repo, head_sha=pr["head"]["sha"])
    assert (run["conclusion"], str(run["id"])) == ("success", outputs["check-run-id"])


def _run_check_step(github, tmp_path: Path, monkeypatch, action: dict, inputs: dict[str, str],
                    checkout_path: str = "") -> tuple[subprocess.CompletedProcess, dict[str, str], Harness, dict]:
    """The composite's check step, with some inputs set as a workflow's `with:` would set them."""
    llm = LLMServer().start()
    try:
        repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
        h = Harness(github, repo, llm, tmp_path, monkeypatch)
        pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
        h.repo.clone(tmp_path / "workspace" / checkout_path, h.token)  # actions/checkout with `path:`
        runner_temp = tmp_path / "runner-temp"
        runner_temp.mkdir()
        (runner_temp / "gating-venv").symlink_to(Path(sys.prefix))
        event = tmp_path / "event.json"
        event.write_text(__import__("json").dumps(h.event(pr)), encoding="utf-8")
        env = {**clean_env(), **h.env(pr["head"]["sha"], h.token, event, tmp_path), "RUNNER_TEMP": str(runner_temp)}
        values = {f"inputs.{k}": str(v.get("default") or "") for k, v in action["inputs"].items()}
        values["inputs.github-token"] = h.token
        values.update({f"inputs.{k}": v for k, v in inputs.items()})
        check = step(action, "check")
        env.update({k: _expand(str(v), values) for k, v in check["env"].items()})
        cwd = tmp_path / "workspace" / _expand(check["working-directory"], values)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", check["run"]],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        llm.stop()
    outputs = parse_outputs((tmp_path / "output.txt").read_text(encoding="utf-8")) \
        if (tmp_path / "output.txt").exists() else {}
    return proc, outputs, h, pr


def test_args_written_on_several_lines_all_reach_gating_check(github, tmp_path: Path, monkeypatch, action: dict):
    """`args: |` with one flag per line is how workflows are usually written."""
    proc, outputs, h, pr = _run_check_step(github, tmp_path, monkeypatch, action,
                                           {"args": "--quiet\n--no-post\n"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "gating / eval: Pass: the 1 threshold met; 12 paired cases, no significant regression\n"
    assert h.check_runs(pr["head"]["sha"]) == [] and outputs["check-run-id"] == ""


def test_working_directory_config_and_fail_on_inputs_are_used(github, tmp_path: Path, monkeypatch, action: dict):
    proc, outputs, h, pr = _run_check_step(github, tmp_path, monkeypatch, action,
                                           {"working-directory": "bot", "config": "./gating.yml", "fail-on": "never",
                                            "concurrency": "2", "baseline": "none"},
                                           checkout_path="bot")
    assert proc.returncode == 0, proc.stderr
    assert "baseline: none (thresholds only)" in proc.stdout
    assert (outputs["verdict"], outputs["conclusion"]) == ("pass", "success")
    [run] = h.check_runs(pr["head"]["sha"])
    assert str(run["id"]) == outputs["check-run-id"]


def test_fork_pattern_workflows_keep_secrets_and_the_heads_code_apart():
    collect = load(ROOT / "examples" / "workflows" / "gating-collect.yml")
    evaluate = load(ROOT / "examples" / "workflows" / "gating-evaluate.yml")
    assert list(collect["on"]) == ["pull_request"] and not collect["on"]["pull_request"]  # no paths: filter
    assert collect["permissions"] == {"contents": "read"}
    assert "secrets." not in (ROOT / "examples" / "workflows" / "gating-collect.yml").read_text()
    assert evaluate["on"] == {"workflow_run": {"workflows": [collect["name"]], "types": ["completed"]}}
    assert evaluate["permissions"] == {"actions": "read", "checks": "write", "contents": "write", "pull-requests": "read"}
    assert "github.event.workflow_run.event == 'pull_request'" in evaluate["jobs"]["evaluate"]["if"]
    [checkout, gating] = evaluate["jobs"]["evaluate"]["steps"]
    assert "ref" not in checkout["with"]  # the base branch: the head is never checked out with secrets
    assert gating["with"]["mode"] == "evaluate" and set(gating["env"]) == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert [s["with"]["mode"] for s in collect["jobs"]["collect"]["steps"] if "with" in s and "mode" in s["with"]] \
        == ["collect"]
    inputs = set(load(ROOT / "action.yml")["inputs"])
    for wf in (collect, evaluate):
        for job in wf["jobs"].values():
            for s in job["steps"]:
                if s["uses"] == action_ref():
                    assert set(s["with"]) <= inputs
                else:
                    assert PINNED.match(s["uses"]), s["uses"]
    same_repo_only = load(ROOT / "examples" / "workflows" / "gating.yml")["jobs"]["eval"]["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in same_repo_only


def test_the_composite_collects_then_evaluates_a_fork_pull_request(github, tmp_path: Path, monkeypatch, action: dict):
    """Both halves through the action's own bash steps: `mode: collect`, then `mode: evaluate` with the
    artifact where download-artifact puts it."""
    import json

    from check_support import answer_prompt

    with LLMServer() as llm:
        repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
        h = Harness(github, repo, llm, tmp_path, monkeypatch)
        fork = github.fork_repo(repo, "mallory")
        github.push(fork, "tweak", {"prompts/answer.md": answer_prompt("no")}, "From a fork", user="mallory")
        pr = github.create_pull(repo, "mallory:tweak", "main", "From a fork", "mallory")
        runner_temp = tmp_path / "runner-temp"
        runner_temp.mkdir()
        (runner_temp / "gating-venv").symlink_to(Path(sys.prefix))

        def run_step(step_id: str, mode: str, token: str, event_name: str, payload: dict, sha: str, where: Path):
            event = tmp_path / f"{mode}-event.json"
            event.write_text(json.dumps(payload), encoding="utf-8")
            env = {**clean_env(), **h.env(sha, token, event, tmp_path, event_name), "RUNNER_TEMP": str(runner_temp)}
            values = {f"inputs.{k}": str(v.get("default") or "") for k, v in action["inputs"].items()}
            values |= {"inputs.github-token": token, "inputs.mode": mode}
            s = step(action, step_id)
            env.update({k: _expand(str(v), values) for k, v in s["env"].items()})
            return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=where,
                                  env=env, capture_output=True, text=True, timeout=120)

        ro = github.read_only_token()
        collected = run_step("collect", "collect", ro, "pull_request", h.event(pr), pr["head"]["sha"],
                             repo.clone(tmp_path / "pr-checkout", ro).root)
        assert collected.returncode == 0, collected.stderr
        # what upload-artifact then download-artifact do with ${{ runner.temp }}/gating-collect/
        (runner_temp / "gating-collect").rename(runner_temp / "gating-collected")
        token = github.actions_token()
        payload = github.webhook("workflow_run", "completed", repo=repo, number=pr["number"]).payload
        evaluated = run_step("check", "evaluate", token, "workflow_run", payload, repo.head(),
                             repo.clone(tmp_path / "base-checkout", token).root)
        assert evaluated.returncode == 1, evaluated.stderr
        assert evaluated.stdout.startswith("gating / eval: Fail:")
        [run] = github.list_check_runs(repo, head_sha=pr["head"]["sha"])
        assert run["conclusion"] == "failure"
        bad = run_step("check", "sideways", token, "workflow_run", payload, repo.head(), tmp_path / "base-checkout")
        assert bad.returncode == 2 and "mode 'sideways' is not one of: check, collect, evaluate" in bad.stderr


def test_sharded_example_workflow_runs_a_matrix_and_one_merge_job_that_posts():
    wf = load(ROOT / "examples" / "workflows" / "gating-sharded.yml")
    assert "pull_request" in wf["on"] and not (wf["on"]["pull_request"] or {})  # no paths: filter
    assert wf["permissions"] == {"contents": "read"}  # the shards can post nothing
    shard, merge = wf["jobs"]["shard"], wf["jobs"]["eval"]
    n = len(shard["strategy"]["matrix"]["shard"])
    assert shard["strategy"]["fail-fast"] is False and "permissions" not in shard
    [gating] = [s for s in shard["steps"] if s.get("uses") == action_ref()]
    assert gating["with"]["shard"] == f"${{{{ matrix.shard }}}}/{n}" and "merge" not in gating["with"]
    assert merge["needs"] == "shard" and "!cancelled()" in merge["if"]
    assert merge["permissions"] == {"actions": "read", "checks": "write", "contents": "write", "pull-requests": "read"}
    [merging] = [s for s in merge["steps"] if s.get("uses") == action_ref()]
    assert merging["with"]["merge"] is True and "env" not in merging  # no model is called: no keys
    inputs = set(load(ROOT / "action.yml")["inputs"])
    for job in (shard, merge):
        assert job["steps"][0]["with"]["fetch-depth"] == 0
        for s in job["steps"]:
            if s["uses"] == action_ref():
                assert set(s["with"]) <= inputs
            else:
                assert PINNED.match(s["uses"]), s["uses"]


def test_the_composite_shards_then_merges_and_only_the_merge_posts(github, tmp_path: Path, monkeypatch,
                                                                   action: dict):
    """Two shard jobs and the merge job through the action's own bash, the artifacts moved where
    upload-artifact and download-artifact (merge-multiple) put them."""
    import json

    with LLMServer() as llm:
        repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
        h = Harness(github, repo, llm, tmp_path, monkeypatch)
        pr = h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")
        event = tmp_path / "event.json"
        event.write_text(json.dumps(h.event(pr)), encoding="utf-8")

        def job(name: str, inputs: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
            runner_temp = tmp_path / name
            runner_temp.mkdir()
            (runner_temp / "gating-venv").symlink_to(Path(sys.prefix))
            env = {**clean_env(), **h.env(pr["head"]["sha"], h.token, event, runner_temp),
                   "RUNNER_TEMP": str(runner_temp), "GATING_CACHE_DIR": str(tmp_path / "cache")}
            values = {f"inputs.{k}": str(v.get("default") or "") for k, v in action["inputs"].items()}
            values |= {"inputs.github-token": h.token, **{f"inputs.{k}": v for k, v in inputs.items()}}
            s = step(action, "check")
            env.update({k: _expand(str(v), values) for k, v in s["env"].items()})
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]],
                                  cwd=h.clone().root, env=env, capture_output=True, text=True, timeout=120)
            return proc, runner_temp

        shards = tmp_path / "merge" / "gating-shards"
        shards.mkdir(parents=True)
        for i in (1, 2):
            proc, temp = job(f"shard-{i}", {"shard": f"{i}/2"})
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.startswith(f"gating / eval: shard {i}/2: evaluated ")
            outputs = parse_outputs((temp / "output.txt").read_text(encoding="utf-8"))
            assert outputs["shard-name"] == f"{i}-of-2"
            assert outputs["shard-report"] == str(temp / "gating-shard" / f"shard-{i}-of-2.json")
            (temp / "gating-shard" / f"shard-{i}-of-2.json").rename(shards / f"shard-{i}-of-2.json")
        assert github.list_check_runs(repo, head_sha=pr["head"]["sha"]) == []
        (tmp_path / "merge" / "gating-venv").symlink_to(Path(sys.prefix))
        runner_temp = tmp_path / "merge"
        env = {**clean_env(), **h.env(pr["head"]["sha"], h.token, event, runner_temp), "RUNNER_TEMP": str(runner_temp)}
        values = {f"inputs.{k}": str(v.get("default") or "") for k, v in action["inputs"].items()}
        values |= {"inputs.github-token": h.token, "inputs.merge": "true"}
        s = step(action, "check")
        env.update({k: _expand(str(v), values) for k, v in s["env"].items()})
        merged = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]],
                                cwd=h.clone().root, env=env, capture_output=True, text=True, timeout=120)
        assert merged.returncode == 0, merged.stderr
        assert merged.stdout.startswith("gating / eval: Pass: the 1 threshold met; 12 paired cases")
        [run] = github.list_check_runs(repo, head_sha=pr["head"]["sha"])
        assert run["conclusion"] == "success"
        bad, _ = job("both", {"shard": "1/2", "merge": "true"})
        assert bad.returncode == 2 and "expected I/N (e.g. 2/4), in a job without merge: true" in bad.stderr
