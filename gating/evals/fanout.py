"""Worker processes for one eval run: every core when one process cannot keep up.

One process spends about a millisecond of CPU per live request (the HTTP client, JSON, assertions),
so at 64 requests in flight against a 100 ms model it runs out of CPU before it runs out of
concurrency. `run_forked` then forks worker processes, each with its own event loop, connection pool
and Python-check process, and splits the run's concurrency among them (the shares add up to it).
Cases are claimed one at a time from a shared counter, so a slow case never leaves one process idle
while another still has a queue; results stream back to the parent (which also works a share) and
are put back in case order. Every request still passes the run's one RequestGate (gating/evals/gate.py),
so the in-flight bound and a rate limit's pause hold across all processes.

When it fans out (`worker_count`): live or record runs of a prompt or http target, on Linux (fork
keeps the loaded snapshot, cassettes and cache index without pickling them), with at least
AUTO_MIN_CONCURRENCY requests in flight and AUTO_MIN_CASES cases, one process per usable core, each
keeping at least MIN_SHARE requests in flight; `evals.workers`, `GATING_EVAL_WORKERS` or `--workers`
force a count (1: never). It stays in one process for replay (no network to wait on: the work is CPU
on cassettes already in memory, and a second process would only add its start and the transfer of
results) and for command targets (each case already runs in a process of its own).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gating.errors import GatingError
from gating.evals.gate import RequestGate
from gating.evals.progress import Progress
from gating.evals.records import CaseResult

ENV_WORKERS = "GATING_EVAL_WORKERS"
AUTO_MIN_CONCURRENCY = 32  # below this one process keeps up with any model latency worth measuring
AUTO_MIN_CASES = 200  # fewer cases finish before a second process pays for itself
MIN_SHARE = 16  # requests in flight per process when the count is chosen automatically
MAX_WORKERS = 64
FLUSH_S = 0.02  # a worker sends its finished cases to the parent at most this often


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def requested_workers(option: int | None, env: Mapping[str, str], configured: Any) -> int | None:
    """The forced worker count: the option, then GATING_EVAL_WORKERS, then `evals.workers`; None: choose."""
    if option is not None:
        return option
    raw = (env.get(ENV_WORKERS) or "").strip()
    if raw and raw != "auto":
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise GatingError(f"{ENV_WORKERS}={raw!r} is not a positive number of worker processes (or `auto`)")
        return n
    return configured if isinstance(configured, int) and not isinstance(configured, bool) else None


def worker_count(requested: int | None, *, cases: int, concurrency: int, mode: str, target: str,
                 cores: int | None = None) -> int:
    """How many processes run the cases (1: this one alone); see the module docstring for why."""
    if mode not in ("live", "record") or target not in ("prompt", "http") or not can_fork():
        return 1
    cap = max(1, min(concurrency, cases, MAX_WORKERS))
    if requested is not None:
        return max(1, min(requested, cap))
    cores = usable_cores() if cores is None else cores
    if cores < 2 or concurrency < AUTO_MIN_CONCURRENCY or cases < AUTO_MIN_CASES:
        return 1
    return max(1, min(cores, concurrency // MIN_SHARE, cap))


def shares(concurrency: int, workers: int) -> list[int]:
    """The run's concurrency split among `workers` processes: they add up to it, none below 1."""
    base, extra = divmod(concurrency, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


@dataclass
class Engine:
    """One process's means to evaluate a case, and what it hands back once its share is done."""

    case: Callable[[Any], Awaitable[CaseResult]]
    finish: Callable[[], Awaitable[tuple[Any, Any]]]  # closes its resources; (stats, recorded)


Make = Callable[[RequestGate, int], Engine]  # (the shared gate, this process's concurrency) -> Engine


class _Claims:
    """The next case index, shared by every process: each case is taken exactly once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._next = multiprocessing.get_context("fork").Value("q", 0)

    def take(self) -> int | None:
        with self._next.get_lock():
            i = int(self._next.value)
            if i >= self.total:
                return None
            self._next.value = i + 1
        return i


async def _work(engine: Engine, cases: Sequence[Any], claims: _Claims, share: int,
                done: Callable[[int, CaseResult], None]) -> None:
    async def one() -> None:
        while (i := claims.take()) is not None:
            done(i, await engine.case(cases[i]))

    await asyncio.gather(*(one() for _ in range(share)))


def _child(make: Make, gate: RequestGate, share: int, cases: Sequence[Any], claims: _Claims, conn: Any) -> None:
    """A worker process: its own event loop and pool; finished cases go to the parent in small batches.

    It writes nothing to the terminal (the parent reports): a thread of the parent (a progress display)
    may have held the standard streams' locks at the fork, which this process could then never take."""
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process's own, until it exits
    batch: list[tuple[int, CaseResult]] = []
    last = [time.monotonic()]

    def done(i: int, res: CaseResult) -> None:
        batch.append((i, res))
        if time.monotonic() - last[0] >= FLUSH_S:
            conn.send(("cases", batch[:]))
            batch.clear()
            last[0] = time.monotonic()

    ended: list[tuple[Any, Any]] = []

    async def main() -> None:  # (stats, recorded) beside the task: asyncio.run formats its result (runner.run_evals)
        engine = make(gate, share)
        try:
            await _work(engine, cases, claims, share, done)
        finally:
            ended.append(await engine.finish())

    code = 1
    try:
        asyncio.run(main())
        stats, recorded = ended[0]
        conn.send(("cases", batch))
        conn.send(("end", (stats, recorded)))
        code = 0
    except BaseException:  # noqa: BLE001 - the parent reports it; a worker never dies silently
        conn.send(("error", traceback.format_exc(limit=8)))
    finally:
        conn.close()
        # Leave now: what this process inherited (the parent's event loop, its threads' objects, exit
        # handlers and finalizers) belongs to the parent, and cleaning it up here could only harm it.
        os._exit(code)


async def run_forked(make: Make, cases: Sequence[Any], concurrency: int, workers: int,
                     progress: Progress | None) -> tuple[list[CaseResult], list[tuple[Any, Any]]]:
    """Evaluate `cases` in this process and `workers - 1` forked ones. Returns the results in case
    order and each process's (stats, recorded). A worker that fails fails the run, naming why."""
    ctx = multiprocessing.get_context("fork")
    gate = RequestGate(concurrency, shared=True)
    claims = _Claims(len(cases))
    parts = shares(concurrency, workers)
    results: list[CaseResult | None] = [None] * len(cases)
    ends: list[tuple[Any, Any]] = []
    loop = asyncio.get_running_loop()
    children: list[tuple[Any, Any, asyncio.Future[None]]] = []

    def done(i: int, res: CaseResult) -> None:
        results[i] = res
        if progress is not None:
            progress.advance(res)

    def reader(conn: Any, fut: asyncio.Future[None]) -> Callable[[], None]:
        def on_readable() -> None:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                loop.remove_reader(conn.fileno())
                if not fut.done():
                    fut.set_exception(GatingError("an eval worker process ended before it reported its cases"))
                return
            if kind == "cases":
                for i, res in payload:
                    done(i, res)
            elif kind == "end":
                ends.append(payload)
                loop.remove_reader(conn.fileno())
                if not fut.done():
                    fut.set_result(None)
            elif not fut.done():
                loop.remove_reader(conn.fileno())
                fut.set_exception(GatingError(f"an eval worker process failed:\n{payload}"))
        return on_readable

    ok = False
    gc.freeze()  # the workers never collect (and so never finalize) what they inherit; less to copy, too
    try:
        for share in parts[1:]:
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(make, gate, share, cases, claims, send), daemon=True,
                               name="gating-eval-worker")
            proc.start()
            send.close()
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(recv.fileno(), reader(recv, fut))
            children.append((proc, recv, fut))
        gc.unfreeze()
        engine = make(gate, parts[0])
        try:
            await _work(engine, cases, claims, parts[0], done)
        finally:
            ends.append(await engine.finish())
        await asyncio.gather(*(f for _p, _c, f in children))
        ok = True
    finally:
        gc.unfreeze()
        for proc, conn, _f in children:
            try:
                loop.remove_reader(conn.fileno())
            except (ValueError, OSError):
                pass
            conn.close()
            if not ok:  # the run failed or was cancelled: its workers' cases are not wanted
                proc.terminate()
            proc.join(5)
            if proc.is_alive():  # it reported its end, or failed: it must not outlive the run
                proc.kill()
                proc.join(5)
    missing = sum(1 for r in results if r is None)
    if missing:
        raise GatingError(f"{missing} eval cases were claimed by a worker process that did not report them")
    return [r for r in results if r is not None], ends
