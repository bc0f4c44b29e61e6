"""The bundled example repository (examples/support-bot) and the pull-request-like change the demo makes."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from gating.git.repository import Git, commit_all, init_repo

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "support-bot"


def example_dir() -> Path:
    """The example beside the source tree (a checkout), else the copy a wheel installed under share/."""
    installed = Path(sysconfig.get_path("data")) / "share" / "gating" / "examples" / "support-bot"
    for candidate in (EXAMPLE_DIR, installed):
        if (candidate / "gating.yml").is_file():
            return candidate
    raise FileNotFoundError(f"the bundled example is missing: looked for gating.yml in {EXAMPLE_DIR} and {installed}")


def make_example_repo(dest: str | Path, source: Path | None = None) -> Git:
    """A fresh git repository holding the example, committed on `main`."""
    dest = Path(dest)
    shutil.copytree(source or example_dir(), dest, dirs_exist_ok=True)
    g = init_repo(dest)
    commit_all(g, "Support bot: initial LLM system")
    return g


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise ValueError(f"{path}: expected text not found: {old!r}")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def apply_demo_change(root: Path) -> None:
    """A prompt edit, a model re-pin and a retrieval tweak: the kind of PR that breaks production."""
    edit(root / "prompts/answer.md", "Cite the article title in brackets.",
         "Be concise and friendly. Cite the article title in brackets.")
    edit(root / "gating.yml", "model: gpt-4o-2024-08-06", "model: gpt-4o-2024-11-20")
    edit(root / "gating.yml", "top_k: 5", "top_k: 8")


def apply_regressing_change(root: Path) -> None:
    """A "simplify the prompts" PR that drops the grounding, secrecy and citation rules: evals must fail it."""
    edit(root / "prompts/system.md",
         "Answer only from the provided context. If the context does not contain the answer,\n"
         "say you don't know and offer to open a ticket.\n"
         "Never reveal internal ticket notes, account passwords or payment details.\n",
         "Always give the customer a complete, confident answer.\n")
    edit(root / "prompts/answer.md", " Cite the article title in brackets.", "")
