"""Releases: one version and one repository name everywhere, the Action's pinned install step, and a
wheel and sdist that build and install cleanly in fresh virtual environments."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from ruamel.yaml import YAML

import gating
from gating.about import action_ref, major, repository, version
from gating.git.repository import commit_all, init_repo

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
USES = re.compile(r"uses:\s*([\w.-]+/[\w.-]+)@([\w.-]+)")
# The App's web server and the emulator's validation (extras `app` and `test`): not imported by
# `gating check`, so neither a dependency nor in the Action's lock.
APP_ONLY = {"flask", "gunicorn", "openapi-core", "orjson"}


def _load_bench():
    spec = importlib.util.spec_from_file_location("action_setup", ROOT / "bench" / "action_setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "action.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def test_version_is_semantic_and_reported_by_the_cli_and_the_changelog() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", version()) and version() == gating.__version__
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gating.__version__"}
    proc = subprocess.run([sys.executable, "-m", "gating", "--version"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"gating {version()}\n")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(version())}\] - (\d{{4}}-\d{{2}}-\d{{2}}|unreleased)$", changelog, re.M)


def test_the_repository_is_named_once_and_readme_and_examples_agree() -> None:
    urls = PYPROJECT["project"]["urls"]
    assert urls["Repository"] == f"https://github.com/{repository()}"
    assert all(repository() in u for u in urls.values())
    assert action_ref() == f"{repository()}@v{major()}"
    refs = []
    for path in [ROOT / "README.md", *sorted((ROOT / "examples" / "workflows").glob("*.yml"))]:
        for owner_name, ref in USES.findall(path.read_text(encoding="utf-8")):
            if not re.fullmatch(r"[0-9a-f]{40}", ref) and owner_name != ".":  # third-party actions pin a sha
                refs.append((path.name, f"{owner_name}@{ref}"))
    assert {name for name, _ in refs} >= {"README.md", "gating.yml", "gating-collect.yml", "gating-evaluate.yml"}
    assert [r for r in refs if r[1] != action_ref()] == []


def test_the_action_installs_exactly_the_pinned_dependencies_of_gating_check() -> None:
    pins = _lock()
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name not in APP_ONLY, f"{req.name} is a dependency of the Action's install; it belongs in an extra"
        assert name in pins, f"requirements/action.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is not {req.specifier}"
    assert "setuptools" in pins and not APP_ONLY & set(pins)
    for extra, specs in PYPROJECT["project"]["optional-dependencies"].items():
        for spec in specs:
            name = re.sub(r"[-_.]+", "-", Requirement(spec).name).lower()
            assert name == "gating" or name not in pins, f"requirements/action.txt pins {name} of extra `{extra}`"
    assert PYPROJECT["project"]["optional-dependencies"]["test"][0] == "gating[app]"  # `.[test]` runs everything
    assert not {"pytest", "ruff", "pytest-timeout"} & set(pins)
    steps = YAML(typ="safe").load((ROOT / "action.yml").read_text(encoding="utf-8"))["runs"]["steps"]
    deps = next(s for s in steps if s.get("id") == "deps")
    assert 'sha256sum "$GATING_ACTION_PATH/requirements/action.txt"' in deps["run"]
    cache = next(s for s in steps if s.get("id") == "wheels")
    assert cache["uses"].startswith("actions/cache@") and cache["with"]["key"] == "${{ steps.deps.outputs.key }}"


def test_release_script_refuses_an_undated_version_then_tags_and_moves_the_major(tmp_path: Path) -> None:
    bench = _load_bench()
    g = init_repo(tmp_path / "repo")
    bench.copy_tree(g.root)
    commit_all(g, "a release candidate")
    script = [sys.executable, str(g.root / "scripts" / "release.py")]
    changelog = g.root / "CHANGELOG.md"
    changelog.write_text(re.sub(rf"^## \[{re.escape(version())}\] - .*$", f"## [{version()}] - unreleased",
                                changelog.read_text(encoding="utf-8"), flags=re.M), encoding="utf-8")
    commit_all(g, "undated")
    refused = subprocess.run(script, cwd=g.root, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert f"CHANGELOG.md: no section `## [{version()}] - YYYY-MM-DD`" in refused.stderr
    changelog.write_text(changelog.read_text(encoding="utf-8").replace(
        f"## [{version()}] - unreleased", f"## [{version()}] - 2026-12-01"), encoding="utf-8")
    commit_all(g, "dated")
    done = subprocess.run(script, cwd=g.root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    head = g.run("rev-parse", "HEAD").strip()
    assert g.run("rev-parse", f"v{version()}^{{commit}}").strip() == head
    assert g.run("rev-parse", f"v{major()}^{{commit}}").strip() == head
    (g.root / "NEWS").write_text("later\n")
    commit_all(g, "after the release")
    again = subprocess.run(script, cwd=g.root, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and f"tag v{version()} exists already" in again.stderr


@pytest.fixture(scope="module")
def action_step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """action.yml's install step, run for real (cache miss) on a copy of the tree."""
    bench = _load_bench()
    tmp = tmp_path_factory.mktemp("action")
    action = bench.copy_tree(tmp / "action")
    temp = tmp / "runner-temp"
    temp.mkdir()
    _wall, _cpu, proc = bench.run_step(bench.install_script(), action, temp, cached=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"gating {version()}\n"
    return {"venv": temp / "gating-venv", "wheels": temp / "gating-wheels", "action": action,
            "installed": bench.installed(temp / "gating-venv")}


@pytest.mark.slow
def test_the_install_step_gives_a_working_gating_with_the_slim_set(action_step: dict[str, Path], tmp_path: Path) -> None:
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in action_step["installed"]}
    assert names == set(_lock()) | {"gating"}
    assert not names & APP_ONLY
    g = init_repo(tmp_path / "repo")
    shutil.copytree(ROOT / "examples" / "support-bot", g.root, dirs_exist_ok=True)
    commit_all(g, "example")
    proc = subprocess.run([str(action_step["venv"] / "bin" / "gating"), "-C", str(g.root), "check", "--no-post",
                           "--notes", "off", "--base", "HEAD", "--head", "HEAD", "--json", "-"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"verdict": "unchanged"' in proc.stdout


@pytest.mark.slow
def test_pip_install_dot_gives_the_slim_set_and_commands_that_name_the_extras_they_need(
        action_step: dict[str, Path], tmp_path: Path) -> None:
    """`pip install .`, dependencies resolved from pyproject (here from the Action's wheelhouse, offline):
    no `app` package, neither extra, a working `gating diff`, and the App and the demo name their extra."""
    bench = _load_bench()
    src = bench.copy_tree(tmp_path / "src")
    venv = tmp_path / "venv"
    base = bench.base_python()
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    done = subprocess.run([base, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                           "--no-index", "--find-links", str(action_step["wheels"]), "--no-compile", str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr  # a dependency outside the lock would not resolve here
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in bench.installed(venv)}
    assert names == set(_lock()) - {"setuptools"} | {"gating"}
    here = tmp_path / "elsewhere"  # not the checkout, whose app/ folder would be importable from the cwd
    here.mkdir()
    py, gating_bin = str(venv / "bin" / "python"), str(venv / "bin" / "gating")
    found = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in ('app', 'flask', 'gunicorn', "
                            "'werkzeug', 'pytest', 'openapi_core') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=60, cwd=here)
    assert found.stdout == "[]\n", found.stderr
    helped = subprocess.run([gating_bin, "--help"], capture_output=True, text=True, timeout=60, cwd=here)
    assert helped.returncode == 0 and "semantic diff" in helped.stdout, helped.stderr
    g = init_repo(tmp_path / "repo")
    shutil.copytree(ROOT / "examples" / "support-bot", g.root, dirs_exist_ok=True)
    commit_all(g, "example")
    manifest = g.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace("temperature: 0.2", "temperature: 0.3", 1))
    commit_all(g, "a warmer model")
    diffed = subprocess.run([gating_bin, "-C", str(g.root), "diff", "HEAD~1", "HEAD"], capture_output=True,
                            text=True, timeout=60, cwd=here)
    assert diffed.returncode == 0 and "temperature" in diffed.stdout, diffed.stderr
    for argv, extra in ((["app", "serve"], "app"), (["demo"], "test")):
        proc = subprocess.run([gating_bin, *argv], capture_output=True, text=True, timeout=60, cwd=here)
        assert proc.returncode == 2 and f"pip install 'gating[{extra}]'" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    emulator = subprocess.run([py, "-c", "from gating.testing import start_emulator"], capture_output=True, text=True,
                              timeout=60, cwd=here)
    assert "pip install 'gating[test]'" in emulator.stderr


@pytest.mark.slow
def test_wheel_and_sdist_build_and_install_cleanly(action_step: dict[str, Path], tmp_path: Path) -> None:
    bench = _load_bench()
    src = bench.copy_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    py = str(action_step["venv"] / "bin" / "python")  # has the pinned setuptools
    built = []
    for hook in ("build_wheel", "build_sdist"):  # one process per hook, as build frontends do
        made = subprocess.run([py, "-c", f"import sys; from setuptools import build_meta as b; "
                               f"print('BUILT', b.{hook}(sys.argv[1]))", str(dist)], cwd=src, capture_output=True,
                              text=True, timeout=300)
        assert made.returncode == 0, made.stderr
        built += [dist / line.split()[1] for line in made.stdout.splitlines() if line.startswith("BUILT ")]
    wheel, sdist = built
    assert wheel.name == f"gating-{version()}-py3-none-any.whl" and sdist.name == f"gating-{version()}.tar.gz"
    files = zipfile.ZipFile(wheel).namelist()
    assert f"gating-{version()}.data/data/share/gating/examples/support-bot/gating.yml" in files
    meta = zipfile.ZipFile(wheel).read(f"gating-{version()}.dist-info/METADATA").decode()
    assert f"Project-URL: Repository, https://github.com/{repository()}" in meta
    base = bench.base_python()
    for artifact in (wheel, sdist):
        venv = tmp_path / f"venv-{artifact.suffix}"
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        pip = [base, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-index",
               "--find-links", str(action_step["wheels"]), "--no-compile"]
        subprocess.run([*pip, "--no-deps", "-r", str(ROOT / "requirements" / "action.txt")], check=True, timeout=300)
        done = subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(artifact)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        out = subprocess.run([str(venv / "bin" / "gating"), "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert out.stdout == f"gating {version()}\n", out.stderr
        # installed metadata, not a checkout, names the repository
        named = subprocess.run([str(venv / "bin" / "python"), "-c", "from gating.about import action_ref; "
                                "print(action_ref())"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert named.stdout.strip() == action_ref(), named.stderr
