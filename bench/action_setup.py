"""How long the Action's setup takes: action.yml's own "Install gating" step, run here in bash.

Copies the tracked tree to a temporary directory (what the runner checks out as the action), then runs
the step twice in a fresh venv each time:
  cold: no wheelhouse and no pip cache, so every pinned wheel comes from the package index;
  warm: the wheelhouse the cold run left (what actions/cache restores on the next run).
It prints each run's seconds against the 15 s target and the number of distributions installed.
`--before` also times the step as it was (`pip install` of the checkout, resolving every dependency
of the package, App server included) for comparison.

On this machine the index is a local mirror, so "cold" measures pip and the build, not a download;
on a runner, a cache miss adds the download of ~35 MB of wheels once per lock-file change.

    python bench/action_setup.py [--before]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 15.0
BEFORE = '"$GATING_PYTHON" -m venv "$RUNNER_TEMP/gating-venv"\n' \
         '"$RUNNER_TEMP/gating-venv/bin/python" -m pip install --quiet --disable-pip-version-check "$GATING_ACTION_PATH"\n'


def install_script(action_yml: Path = ROOT / "action.yml") -> str:
    """The bash of action.yml's "Install gating" step."""
    steps = YAML(typ="safe").load(action_yml.read_text(encoding="utf-8"))["runs"]["steps"]
    return next(s["run"] for s in steps if s.get("name") == "Install gating")


def base_python() -> str:
    """An interpreter outside any venv, as setup-python's `python-path` is."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return exe if Path(exe).exists() else shutil.which("python3") or sys.executable


def copy_tree(dest: Path) -> Path:
    """The tracked (and new, unignored) files of the checkout: what `uses: OWNER/REPO@v1` downloads."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def run_step(script: str, action_path: Path, runner_temp: Path, cached: bool,
             extra_env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run the step as the runner would (a fresh venv under RUNNER_TEMP); returns wall seconds, CPU
    seconds and the process."""
    shutil.rmtree(runner_temp / "gating-venv", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME", "PIP_NO_"))}
    env.update({"RUNNER_TEMP": str(runner_temp), "GATING_PYTHON": base_python(),
                "GATING_ACTION_PATH": str(action_path), "GATING_WHEELS_CACHED": "true" if cached else "",
                **(extra_env or {})})
    t0, c0 = time.monotonic(), _children_cpu()
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True)
    return time.monotonic() - t0, _children_cpu() - c0, proc


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: the step's work, whatever the load."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def installed(venv: Path) -> list[str]:
    """Distributions in the venv, pip itself excepted."""
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    names = [p.name.split("-")[0] for p in Path(purelib).glob("*.dist-info")]
    return sorted(n for n in names if n.lower() != "pip")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", action="store_true", help="also time the previous step (pip install of the checkout)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gating-action-") as tmp:
        action = copy_tree(Path(tmp) / "action")
        runs = [("cold", install_script(), False, {"PIP_NO_CACHE_DIR": "1"}),
                ("warm", install_script(), True, {"PIP_NO_CACHE_DIR": "1"})]
        if args.before:
            runs.append(("before (pip install of the checkout, warm pip cache)", BEFORE, False, {}))
        worst = 0.0
        for name, script, cached, env in runs:
            temp = Path(tmp) / "runner-temp"
            temp.mkdir(exist_ok=True)
            seconds, cpu, proc = run_step(script, action, temp, cached, env)
            if proc.returncode != 0:
                print(f"{name}: the step failed ({proc.returncode}):\n{proc.stderr}", file=sys.stderr)
                return 1
            dists = installed(temp / "gating-venv")
            verdict = "within" if cpu <= TARGET_S else "OVER"
            print(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU ({verdict} the {TARGET_S:.0f} s target on an "
                  f"idle runner, where wall ~ CPU), {len(dists)} distributions installed"
                  f"{' (' + proc.stdout.strip() + ')' if proc.stdout.strip() else ''}")
            if name == "warm":
                worst = cpu
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} cores: wall time here is stretched by other work")
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
