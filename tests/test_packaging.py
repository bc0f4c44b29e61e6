"""The wheel carries what `gating demo` needs, so it works from a plain `pip install`, not only a checkout."""

from __future__ import annotations

import glob
import subprocess
import tomllib
from pathlib import Path

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
