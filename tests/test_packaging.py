"""The wheel carries what `gating demo` needs, so it works from a plain `pip install`, not only a checkout."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_file_of_the_example_is_installed_as_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {
        (dest, Path(path).name)
        for dest, patterns in config.items()
        for pattern in patterns
        for path in glob.glob(str(ROOT / pattern))
    }
    tracked = subprocess.run(["git", "ls-files", "examples/support-bot"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked, "the example is tracked by git"
    wanted = {("share/gating/" + str(Path(p).parent), Path(p).name) for p in tracked}
    assert wanted - shipped == set()


def test_example_dir_is_found_in_a_checkout() -> None:
    from gating.testing.example import example_dir

    assert example_dir() == ROOT / "examples" / "support-bot"


def test_the_wheel_installs_no_top_level_app_package(tmp_path: Path) -> None:
    """An installed `app` package would shadow (or be shadowed by) anyone's own `app`: the App is gating.server."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("gating-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"gating"}
    assert "gating/server/wsgi.py" in names and "gating/server/handlers/approvals.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "gating = gating.commands.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


IMPOSTOR = "from flask import Flask\napp = Flask('impostor')\n\n@app.get('/healthz')\ndef healthz():\n    return 'impostor'\n"


@pytest.mark.parametrize("own", ["package", "module"])
def test_app_serve_starts_the_gating_app_beside_a_users_own_app(tmp_path: Path, own: str) -> None:
    """`gating app serve` run where a user keeps their own `app/` package or `app.py` still serves the
    gating App: gunicorn loads it by its package name, never by the bare name `app`."""
    from app_support import SECRET, free_port, private_key_pem

    work = tmp_path / "work"
    if own == "package":
        (work / "app").mkdir(parents=True)
        (work / "app" / "__init__.py").write_text(IMPOSTOR)
        (work / "app" / "wsgi.py").write_text("from app import app\n")
    else:
        work.mkdir()
        (work / "app.py").write_text(IMPOSTOR)
    env = {**os.environ, "APP_ID": "42", "PRIVATE_KEY": private_key_pem(), "WEBHOOK_SECRET": SECRET,
           "GATING_DB": str(tmp_path / "jobs.db")}
    env.pop("PYTHONPATH", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gating", "app", "serve", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1"], env=env, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "gating app serve did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    finally:
        proc.terminate()
        proc.wait(10)
