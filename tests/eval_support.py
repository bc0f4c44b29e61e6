"""Helpers for the eval tests: small LLM-system repositories on disk and the local test LLM server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gating.evals.providers import RetryPolicy
from gating.git.revision import WorkTree
from gating.system.snapshot import Snapshot, build_snapshot
from gating.testing.llm_server import LLMServer

MODELS = {
    "m": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18"},
    "j": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
}
PROMPTS = {"p": {"file": "prompts/p.md", "model": "m"}}
PROMPT_FILES = {"prompts/p.md": "{{ q }}\n"}


def a(q: str) -> str:
    """A question whose answer the test server gives verbatim."""
    return f"[[answer: {q}]]"


def write_repo(root: Path, cases: list[dict[str, Any]] | str, *, models: dict | None = None,
               prompts: dict | None = None, files: dict[str, str] | None = None,
               evals: dict[str, Any] | None = None, dataset: str = "evals/cases.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": 1,
        "name": "t",
        "components": {"models": models or MODELS, "prompts": prompts or PROMPTS},
        "evals": {"datasets": [dataset], "target": {"type": "prompt"}, "judge": "j", **(evals or {})},
    }
    buf = io.StringIO()
    YAML().dump(manifest, buf)
    (root / "gating.yml").write_text(buf.getvalue(), encoding="utf-8")
    all_files = {**PROMPT_FILES, **(files or {})}
    if isinstance(cases, str):
        all_files[dataset] = cases
    else:
        all_files[dataset] = "".join(json.dumps(c) + "\n" for c in cases)
    for path, text in all_files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


def load(root: Path) -> tuple[Snapshot, WorkTree]:
    reader = WorkTree(root)
    return build_snapshot(reader), reader


def fast_retries(n: int = 3) -> RetryPolicy:
    import random

    return RetryPolicy(max_retries=n, base_s=0.01, max_delay_s=0.05, rng=random.Random(1))


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, as PEM files in `tmp`: (certificate, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def live_env(server: LLMServer) -> dict[str, str]:
    return {**server.env(), "GATING_PROVIDER": "live"}


def run_on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command on a pseudo-terminal (as a person at a terminal would), returning its exit code and
    everything it wrote."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode("utf-8", "replace")
