"""The load test's fake model, in a process of its own.

One Python process cannot both play a hundred callers on their 20 ms clocks and run a hundred
model sessions (voice detection, answers streamed at 5x real time, tag stamping): it used up
nearly a whole core, and then the load generator, not the server under test, was late. So
``bridge loadtest`` starts this module as a child (``python -m bridge.devtools.load_model``)
and keeps the callers to itself.

The child runs a :class:`~bridge.devtools.fake_realtime.FakeRealtimeServer` with a
:class:`ModelTap`, which times every message on the child's ``time.monotonic()``. On Linux
that clock is the system's ``CLOCK_MONOTONIC``, the same in every process, so a time read
here and one read by a caller in the parent are two readings of one clock, and a hop is their
difference (as :mod:`bridge.devtools.load_probe` explains).

The parent drives it over the child's standard input, a line per command, each answered by
one line on its standard output: ``begin`` starts a pass's readings (``ok``); ``end`` stops
reading and answers with the readings as one line of JSON; end of input stops the server and
the process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from bridge.devtools.fake_records import FakeSessionRecord
from bridge.devtools.fake_response import DEFAULT_DELTA_MS, check_delta_ms
from bridge.devtools.load_tags import TagScanner, stamp
from bridge.devtools.proc_tree import tree_cpu_seconds
from bridge.devtools.uvloop_runner import run_on_uvloop
from bridge.heap import settle_heap

__all__ = [
    "ModelProcess",
    "ModelReadings",
    "ModelSessionReadings",
    "ModelTap",
    "main",
    "parse_delta_ms",
]

_READY_S = 20.0
_COMMAND_S = 30.0  # sending a pass's readings: a few MiB of JSON
_LINE_LIMIT = 1 << 30
_STOP_S = 10.0
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
_APPEND = "input_audio_buffer.append"
_AUDIO_KEY = '"audio"'


@dataclass(slots=True)
class ModelSessionReadings:
    """One model session: when it opened, the tag of the first caller frame it received
    (which tells whose call it is), when the fake said the caller started speaking, and each
    ``conversation.item.truncate`` it got: when, its ``audio_end_ms``, and whether the fake
    accepted it."""

    opened_at: float
    first_frame: int = -1
    speech_started: list[float] = field(default_factory=list)
    truncates: list[tuple[float, int, bool]] = field(default_factory=list)


@dataclass(slots=True)
class ModelReadings:
    """The model's side of one pass: caller frames by tag id with the time each arrived,
    and the answer deltas by tag id with the time each was sent (and whether it was the
    first of its response)."""

    sessions: list[ModelSessionReadings] = field(default_factory=list)
    frame_arrived: dict[int, float] = field(default_factory=dict)
    delta_sent: list[float] = field(default_factory=list)
    delta_first: list[bool] = field(default_factory=list)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "sessions": [
                    [s.opened_at, s.first_frame, s.speech_started, s.truncates]
                    for s in self.sessions
                ],
                "frame_ids": list(self.frame_arrived),
                "frame_at": list(self.frame_arrived.values()),
                "delta_sent": self.delta_sent,
                "delta_first": self.delta_first,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ModelReadings:
        raw = orjson.loads(data)
        return cls(
            sessions=[
                ModelSessionReadings(
                    float(opened),
                    int(first),
                    [float(t) for t in started],
                    [(float(at), int(end_ms), bool(ok)) for at, end_ms, ok in truncates],
                )
                for opened, first, started, truncates in raw["sessions"]
            ],
            frame_arrived=dict(zip(raw["frame_ids"], raw["frame_at"], strict=True)),
            delta_sent=[float(t) for t in raw["delta_sent"]],
            delta_first=[bool(b) for b in raw["delta_first"]],
        )


class _Session:
    __slots__ = ("readings", "record", "response", "scanner")

    def __init__(self, readings: ModelSessionReadings, record: FakeSessionRecord) -> None:
        self.readings = readings
        # The fake keeps the truncates it judged here; they are copied out at the pass's end
        # rather than parsed again from the message on the media path.
        self.record = record
        self.scanner = TagScanner()
        self.response: object = None


class ModelTap:
    """The fake's :class:`~bridge.devtools.fake_realtime.FakeTap` for a load test: between
    :meth:`begin` and :meth:`end` it records one pass; outside, and for sessions opened
    before the pass, it records nothing."""

    def __init__(self) -> None:
        self._readings: ModelReadings | None = None
        self._sessions: dict[int, _Session] = {}

    def begin(self) -> None:
        self._readings = ModelReadings()
        self._sessions = {}

    def end(self) -> ModelReadings:
        readings = self._readings if self._readings is not None else ModelReadings()
        for session in self._sessions.values():
            session.readings.truncates = [
                (cut.at, cut.audio_end_ms, cut.accepted) for cut in session.record.truncates
            ]
        self._readings = None
        self._sessions = {}
        return readings

    def opened(self, record: FakeSessionRecord, at: float) -> None:
        if self._readings is None:
            return
        session = ModelSessionReadings(at)
        self._readings.sessions.append(session)
        self._sessions[id(record)] = _Session(session, record)

    def received(self, record: FakeSessionRecord, text: str, at: float) -> None:
        session = self._sessions.get(id(record))
        if session is None or _APPEND not in text:
            return
        # The payload is the string after "audio" (with or without spaces around the colon):
        # the fake parses the message itself, and a second full parse here would cost as
        # much again.
        key = text.find(_AUDIO_KEY)
        if key < 0:
            return
        start = text.find('"', key + len(_AUDIO_KEY)) + 1
        stop = text.find('"', start)
        if start <= 0 or stop < 0:
            return
        try:
            audio = base64.b64decode(text[start:stop])
        except ValueError:
            return  # the fake itself reports bad base64 to the server
        arrived = self._readings.frame_arrived if self._readings is not None else {}
        for ident in session.scanner.feed(audio):
            if ident not in arrived:
                arrived[ident] = at
                if session.readings.first_frame < 0:
                    session.readings.first_frame = ident

    def sending(self, record: FakeSessionRecord, event: dict[str, Any], at: float) -> None:
        session = self._sessions.get(id(record))
        readings = self._readings
        if session is None or readings is None:
            return
        kind = event.get("type")
        if kind in _AUDIO_DELTAS:
            ident = len(readings.delta_sent)
            audio = stamp(base64.b64decode(event["delta"]), ident)
            event["delta"] = base64.b64encode(audio).decode("ascii")
            response = event.get("response_id")
            readings.delta_first.append(response != session.response)
            session.response = response
            readings.delta_sent.append(at)
        elif kind == "input_audio_buffer.speech_started":
            session.readings.speech_started.append(at)


# ---------------------------------------------------------------- the parent's handle


class ModelProcess:
    """The child process, seen from ``bridge loadtest``: :meth:`start` it, :meth:`begin` and
    :meth:`end` each pass, :meth:`stop` it (also when the run is cancelled)."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self._proc = proc
        self._log = log
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended (None while it runs)."""
        return self._proc.returncode

    def cpu_seconds(self) -> float:
        """CPU the child has used so far (0 once it is gone)."""
        try:
            return tree_cpu_seconds(self._proc.pid)
        except OSError:
            return 0.0

    @classmethod
    async def start(
        cls,
        *,
        port: int,
        api_key: str | None,
        realtime_factor: float,
        log: Path,
        delta_ms: tuple[int, ...] = DEFAULT_DELTA_MS,
    ) -> ModelProcess:
        """The fake model listening on 127.0.0.1:``port`` (0: a free one); ``api_key`` None
        accepts any key. Raises ``RuntimeError`` with the child's log if it does not come up."""
        args = [
            sys.executable,
            "-m",
            "bridge.devtools.load_model",
            "--port",
            str(port),
            "--realtime-factor",
            str(realtime_factor),
            "--delta-ms",
            ",".join(str(ms) for ms in delta_ms),
        ]
        env = dict(os.environ)
        if api_key is not None:
            env["BRIDGE_LOAD_MODEL_KEY"] = api_key  # not on the command line, where ps shows it
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                env=env,
                limit=_LINE_LIMIT,
            )
        finally:
            os.close(log_fd)
        try:
            line = (await cls._line(proc, log, _READY_S)).decode("utf-8", "replace")
            word, _, value = line.partition(" ")
            if word != "listening" or not value.isdigit():
                raise RuntimeError(f"the fake model said {line!r}:\n{_tail(log)}")
        except BaseException:
            await _end(proc)
            raise
        return cls(proc, int(value), log)

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process, log: Path, within_s: float) -> bytes:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(within_s):
                raw = await proc.stdout.readline()
        except TimeoutError:
            raise RuntimeError(f"the fake model did not answer in {within_s:g} s") from None
        if not raw:
            raise RuntimeError(f"the fake model exited:\n{_tail(log)}")
        return raw.strip()

    async def _command(self, command: str) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command.encode() + b"\n")
        await self._proc.stdin.drain()
        return await self._line(self._proc, self._log, _COMMAND_S)

    async def begin(self) -> None:
        answer = await self._command("begin")
        if answer != b"ok":
            raise RuntimeError(f"the fake model answered 'begin' with {answer[:200]!r}")

    async def end(self) -> ModelReadings:
        """The readings of the pass since :meth:`begin`."""
        answer = await self._command("end")
        try:
            return ModelReadings.from_json(answer)
        except (ValueError, KeyError, TypeError) as exc:
            message = f"the fake model answered 'end' with {answer[:200]!r}"
            raise RuntimeError(message) from exc

    async def stop(self) -> None:
        await _end(self._proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Close the child's input (it stops by itself), then end it by its PID if it lingers."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        async with asyncio.timeout(_STOP_S):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def parse_delta_ms(text: str) -> tuple[int, ...]:
    """``"20,40,100"``: the answers' audio deltas take these lengths in turn (ms).
    Raises ``ValueError`` saying what is wrong (argparse shows it)."""
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"not a comma-separated list of milliseconds: {text!r}") from None
    return check_delta_ms(lengths)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- the child


async def _serve(
    port: int,
    api_key: str | None,
    realtime_factor: float,
    delta_ms: tuple[int, ...],
    out: IO[bytes],
) -> None:
    # The load benchmark's conversation, so the figures compare with its own.
    from bridge.devtools.bench_load import _SCRIPT
    from bridge.devtools.fake_realtime import FakeRealtimeServer

    tap = ModelTap()
    fake = FakeRealtimeServer(
        "openai",
        script=_SCRIPT,
        api_key=api_key,
        realtime_factor=realtime_factor,
        tap=tap,
        delta_ms=delta_ms,
    )
    await fake.start("127.0.0.1", port)

    def say(line: str | bytes) -> None:
        out.write((line.encode() if isinstance(line, str) else line) + b"\n")
        out.flush()

    try:
        # As the bridge does: a full collection walking this process's start-up objects
        # would stall every simulated model session for tens of milliseconds mid-run.
        settle_heap()
        say(f"listening {fake.port}")
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(0, "rb", buffering=0)
        )
        while line := (await commands.readline()).decode().strip():
            if line == "begin":
                tap.begin()
                say("ok")
            elif line == "end":
                say(tap.end().to_json())
            else:
                say(f"unknown command {line!r}")
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.devtools.load_model")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--realtime-factor", type=float, default=5.0)
    parser.add_argument("--delta-ms", type=parse_delta_ms, default=DEFAULT_DELTA_MS)
    args = parser.parse_args(argv)
    api_key = os.environ.get("BRIDGE_LOAD_MODEL_KEY") or None
    out = sys.stdout.buffer
    try:
        run_on_uvloop(_serve(args.port, api_key, args.realtime_factor, args.delta_ms, out))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
