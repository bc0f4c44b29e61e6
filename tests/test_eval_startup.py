"""What a run pays for besides its requests: the modules it loads, the trust store it reads, the
result it hands back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from eval_support import a, live_env, load, write_repo

from gating.evals.records import RunResult
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer


def test_the_engine_loads_no_terminal_ui_and_httpx_stays_whole() -> None:
    code = ("import sys\n"
            "from gating.evals.runner import run_evals\n"
            "print(sorted(m for m in ('rich', 'click', 'pygments') if m in sys.modules))\n"
            "import httpx, httpx._main\n"  # an explicit import of httpx's CLI still works
            "print(httpx._main.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "httpx._main"]


def test_a_plain_http_pool_never_reads_the_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from gating.evals.providers import ClientPool

    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counted(*args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)

    async def go(url: str) -> int:
        pool = ClientPool(8, 10)
        try:
            resp = await pool.post(url + "/chat/completions", b'{"model": "m", "messages": []}',
                                   {"content-type": "application/json"})
            return resp.status_code
        finally:
            await pool.aclose()

    with LLMServer() as server:
        assert asyncio.run(go(server.env()["OPENAI_BASE_URL"])) == 200
    assert made == []


def test_the_run_result_is_never_formatted_on_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_repo(tmp_path / "r", [{"id": f"c{i}", "prompt": "p", "vars": {"q": a(f"city {i}")},
                                        "assert": [{"type": "contains", "value": f"city {i}"}]} for i in range(3)])
    snap, reader = load(root)

    formatted: list[str] = []

    def counted(self: RunResult) -> str:  # asyncio formats a result with reprlib, which hides a raise
        formatted.append(self.rev)
        return "RunResult(...)"

    monkeypatch.setattr(RunResult, "__repr__", counted)
    with LLMServer() as server:
        run = run_evals(snap, reader, env=live_env(server), workers=1)
    assert run.metrics["passed"] == 3
    assert formatted == []
