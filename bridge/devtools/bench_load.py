"""CPU and memory of a real ``bridge serve`` process carrying concurrent simulated calls.

The fake realtime server and the Twilio simulator run in this process; the bridge runs as
a child process on a free 127.0.0.1 port, pointed at the fake, so only the bridge's own CPU
(read from ``/proc/<pid>/stat`` before and after the calls) is counted. Linux only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.devtools.simulator import SimulationResult, simulate_call

__all__ = ["LoadReport", "format_load", "measure_load", "run_load"]

_AUTH_TOKEN = "bench-auth-token-0123456789"
_MODEL_KEY = "sk-bench-model-key"
_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
# About one caller turn: a ~2 s utterance, end of speech detected, a 3 s reply, a pause.
_TURN_S = 6.5
_SCRIPT = FakeScript(
    greeting=Reply("Hello, thanks for calling. How can I help?", duration_ms=2000),
    replies=[
        Reply("We are open from nine to five, Monday to Friday.", duration_ms=3000),
        Reply("You are welcome. Is there anything else I can do?", duration_ms=3000),
    ],
    caller_transcripts=["Hi, what are your opening hours?", "Great, thank you very much."],
)


@dataclass(frozen=True, slots=True)
class LoadReport:
    calls: int
    completed: int
    failures: tuple[str, ...]
    call_seconds: float  # sum over calls of the stream's length, as the caller lived it
    wall_seconds: float
    server_cpu_s: float
    server_peak_rss_kib: int
    generator_cpu_s: float  # this process: simulator and fake model, not counted

    @property
    def cpu_ms_per_call_minute(self) -> float:
        if self.call_seconds <= 0:
            return float("nan")
        return self.server_cpu_s * 1000.0 / (self.call_seconds / 60.0)

    @property
    def calls_per_core(self) -> float:
        return 60_000.0 / self.cpu_ms_per_call_minute


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may hold spaces) start at field 3 (state).
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (``VmHWM``) in KiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _bridge_env(url: str, fake_url: str, db: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_", "XAI_"))
    }
    env.update(
        BRIDGE_PUBLIC_URL=url,
        BRIDGE_PROVIDER="openai",
        OPENAI_API_KEY=_MODEL_KEY,
        BRIDGE_REALTIME_URL=fake_url,
        TWILIO_AUTH_TOKEN=_AUTH_TOKEN,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        BRIDGE_DATABASE_URL=f"sqlite:///{db}",
        BRIDGE_LOG_FORMAT="json",
        BRIDGE_LOG_LEVEL="warning",
    )
    return env


def _start_bridge(
    port: int, env: dict[str, str], log: Path, args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """``bridge serve`` on ``port`` (with ``args``), its output in ``log`` (shown if it fails
    to start)."""
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), *args),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    async with httpx.AsyncClient(trust_env=False) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bridge exited early:\n{_tail(log)}")
            try:
                if (await http.get(f"{url}/readyz", timeout=1.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge not ready in {_READY_TIMEOUT_S:g} s:\n{_tail(log)}")
            await asyncio.sleep(0.1)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _utterances(seconds: float) -> list[bytes]:
    turns = max(1, round((seconds - 2.5) / _TURN_S))
    return [load_clip("caller_1" if n % 2 == 0 else "caller_2") for n in range(turns)]


def _failure(result: SimulationResult) -> str | None:
    record = result.call_record
    if result.protocol_problems:
        return f"{result.call_sid}: {result.protocol_problems[0]}"
    if record is None or record.get("status") != "completed":
        status = None if record is None else record.get("status")
        return f"{result.call_sid}: call record status {status!r}"
    if result.timed_out:
        return f"{result.call_sid}: timed out"
    return None


async def measure_load(calls: int, seconds: float, timeout_s: float) -> LoadReport:
    """Run ``calls`` concurrent calls of about ``seconds`` each against a fresh bridge
    process and report its CPU and memory. Everything started is stopped before returning;
    raises ``TimeoutError`` when the whole run exceeds ``timeout_s``."""
    if calls < 1 or seconds <= 0:
        raise ValueError("need calls >= 1 and seconds > 0")
    utterances = _utterances(seconds)
    call_limit_s = seconds * 3 + 30  # each call is bounded; the whole run by timeout_s
    async with (
        asyncio.timeout(timeout_s),
        FakeRealtimeServer("openai", script=_SCRIPT, api_key=_MODEL_KEY) as fake,
    ):
        with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = Path(tmp) / "bridge.log"
            proc = _start_bridge(port, _bridge_env(url, fake.url, Path(tmp) / "calls.db"), log)
            try:
                await _wait_ready(url, proc, log)
                cpu_before = process_cpu_seconds(proc.pid)
                gen_before = time.process_time()
                started = time.monotonic()
                results = await asyncio.gather(
                    *(
                        simulate_call(
                            url,
                            auth_token=_AUTH_TOKEN,
                            caller_utterances=utterances,
                            max_duration_s=call_limit_s,
                        )
                        for _ in range(calls)
                    ),
                    return_exceptions=True,
                )
                wall = time.monotonic() - started
                generator_cpu = time.process_time() - gen_before
                server_cpu = process_cpu_seconds(proc.pid) - cpu_before
                peak = peak_rss_kib(proc.pid)
            finally:
                _stop(proc)  # blocking, but bounded, and immune to a cancelled run
    failures: list[str] = []
    call_seconds = 0.0
    for result in results:
        if isinstance(result, BaseException):
            failures.append(f"{type(result).__name__}: {result}")
            continue
        call_seconds += len(result.heard_audio) / 8000
        problem = _failure(result)
        if problem is not None:
            failures.append(problem)
    return LoadReport(
        calls=calls,
        completed=calls - len(failures),
        failures=tuple(failures),
        call_seconds=call_seconds,
        wall_seconds=wall,
        server_cpu_s=server_cpu,
        server_peak_rss_kib=peak,
        generator_cpu_s=generator_cpu,
    )


def run_load(calls: int = 20, seconds: float = 20.0, timeout_s: float | None = None) -> LoadReport:
    """:func:`measure_load` in a fresh event loop (for the command line)."""
    limit = timeout_s if timeout_s is not None else seconds * 3 + 90
    return asyncio.run(measure_load(calls, seconds, limit))


def format_load(report: LoadReport) -> str:
    """The report as text, ready to print."""
    lines = [
        f"load: {report.calls} concurrent simulated calls against `bridge serve` "
        "(fake OpenAI GA model, pcmu), CPU of the bridge process only",
        "",
        f"calls completed          {report.completed} of {report.calls}",
        f"total call-seconds       {report.call_seconds:.1f} (wall {report.wall_seconds:.1f} s)",
        f"server CPU seconds       {report.server_cpu_s:.2f}",
        f"CPU ms per call-minute   {report.cpu_ms_per_call_minute:.0f}"
        f"  (~{report.calls_per_core:.0f} calls per core)",
        f"server peak RSS          {report.server_peak_rss_kib / 1024:.1f} MiB",
        f"load generator CPU       {report.generator_cpu_s:.2f} s (simulator + fake model, "
        "not counted)",
    ]
    lines += [f"failed: {failure}" for failure in report.failures[:5]]
    return "\n".join(lines)
