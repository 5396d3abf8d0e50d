"""A real softphone calls the bridge: baresip dials the agent over SIP, speaks a recorded
caller line, and hears the agent's reply. Everything runs on 127.0.0.1; baresip is headless,
with its own configuration directory, a WAV file as its microphone and a WAV dump of what
it receives as its ear."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bridge.codecs.clips import load_clip
from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.codecs.pcm import ulaw_rms_dbfs
from bridge.codecs.wav import read_wav_as_ulaw8k, write_ulaw8k_wav
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env

StartBridge = Callable[[dict[str, str]], RunningBridge]

# The modules this call needs: PCMU, a WAV file as microphone, a sound-card-free player, the
# sndfile recorder, accounts and the menu that runs the /dial command.
NEEDED_MODULES = ("g711", "aufile", "aubridge", "sndfile", "account", "menu")


def _module_dir() -> Path | None:
    """Where this baresip keeps its modules (next to its binary, or the distribution's)."""
    binary = shutil.which("baresip")
    if binary is None:
        return None
    prefix = Path(binary).resolve().parent.parent
    for candidate in (prefix / "lib/baresip/modules", Path("/usr/lib/baresip/modules")):
        if all((candidate / f"{name}.so").is_file() for name in NEEDED_MODULES):
            return candidate
    return None


MODULES = _module_dir()
pytestmark = [
    pytest.mark.skipif(
        shutil.which("baresip") is None, reason="baresip (SIP softphone) is not installed"
    ),
    pytest.mark.skipif(
        shutil.which("baresip") is not None and MODULES is None,
        reason="baresip lacks one of its modules " + ", ".join(NEEDED_MODULES),
    ),
]
FRAME = 160  # 20 ms of 8 kHz mu-law
REPLY_TEXT = "We are open from nine to five, Monday to Friday."
REPLY_MS = 2500
CALLER_TEXT = "Hi, what are your opening hours?"
# After the caller's line the microphone file plays silence: the fake model needs half a
# second of it to end the caller's turn, then the reply takes REPLY_MS to arrive in real
# time. baresip hangs up by itself when its microphone file runs out.
TRAILING_SILENCE_S = 6
SPEECH_DBFS = -35.0  # the fake model's own speech threshold


def _write_config(
    directory: Path, modules: Path, sip_port: int, rtp_low: int, microphone: Path, dumps: Path
) -> None:
    """baresip's ``config`` and ``accounts``: SIP and RTP on 127.0.0.1 only, PCMU only,
    a WAV file for a microphone and no sound card. It has no file player in this version
    (aufile is a source only), so the sndfile filter records what it decodes from RTP; the
    aubridge player discards the audio."""
    settings = [
        ("module_path", str(modules)),
        ("poll_method", "epoll"),
        ("sip_listen", f"127.0.0.1:{sip_port}"),
        ("net_interface", "127.0.0.1"),
        ("call_local_timeout", "10"),
        ("call_max_calls", "1"),
        ("audio_source", f"aufile,{microphone}"),
        ("audio_player", "aubridge,nowhere"),
        ("audio_alert", "aubridge,nowhere"),
        ("rtp_ports", f"{rtp_low}-{rtp_low + 19}"),
        ("rtcp_mux", "no"),
        ("jitter_buffer_delay", "1-5"),
        ("snd_path", str(dumps)),
        ("statmode_default", "off"),
        ("ringback_disabled", "yes"),
        ("module", "g711.so"),
        ("module", "aufile.so"),
        ("module", "aubridge.so"),
        ("module", "sndfile.so"),
        ("module_tmp", "account.so"),
        ("module_app", "menu.so"),
    ]
    (directory / "config").write_text("".join(f"{k}\t{v}\n" for k, v in settings))
    # No registrar: the account only names the caller. audio_codecs keeps the offer to PCMU.
    (directory / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU\n")


def _longest_voiced_run(ulaw: bytes) -> tuple[int, int]:
    """(first frame, length) of the longest run of 20 ms frames at speech level."""
    best = (0, 0)
    start = 0
    for n in range(len(ulaw) // FRAME + 1):
        frame = ulaw[n * FRAME : (n + 1) * FRAME]
        if len(frame) == FRAME and ulaw_rms_dbfs(frame) >= SPEECH_DBFS:
            continue
        if n - start > best[1]:
            best = (start, n - start)
        start = n + 1
    return best


def _correlation(reference: bytes, heard: bytes) -> float:
    """Best normalized correlation of ``reference`` against any stretch of ``heard`` (both
    mu-law): 1.0 when the reference is heard intact, whatever the gain."""
    ref = np.frombuffer(ulaw_to_pcm16(reference), dtype="<i2").astype(np.float64)
    sig = np.frombuffer(ulaw_to_pcm16(heard), dtype="<i2").astype(np.float64)
    if sig.size < ref.size or not ref.any():
        return 0.0
    size = 1 << (sig.size + ref.size).bit_length()
    dots = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)
    dots = dots[: sig.size - ref.size + 1]
    window = np.concatenate(([0.0], np.cumsum(sig * sig)))
    energies = window[ref.size :] - window[: sig.size - ref.size + 1]
    lag = int(np.argmax(dots / np.sqrt(np.maximum(energies, 1.0))))
    return float(dots[lag] / math.sqrt(max(energies[lag], 1.0) * float(np.dot(ref, ref))))


class _Console:
    """baresip's console output (its log and SIP trace), collected as it comes. ``over`` is
    set once it reports the call ended (it hangs up when its microphone file ends) or once
    it exits."""

    def __init__(self) -> None:
        self.text = ""
        self.over = asyncio.Event()

    async def collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.text += chunk.decode(errors="replace")
            if re.search(r"Call with \S+ terminated", self.text):
                self.over.set()
        self.over.set()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """End baresip by its PID: SIGTERM (it shuts down cleanly), then SIGKILL."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _finished_sip_call(bridge: RunningBridge) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=5) as http:
        for _ in range(100):
            calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
            sip_calls = [c for c in calls if c["channel"] == "sip"]
            if sip_calls and sip_calls[0]["status"] != "in_progress":
                sid = sip_calls[0]["call_sid"]
                record: dict[str, Any] = (await http.get(f"{bridge.url}/api/calls/{sid}")).json()
                return record
            await asyncio.sleep(0.1)
    return None


async def test_baresip_calls_the_agent_and_hears_its_reply(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[Reply(REPLY_TEXT, duration_ms=REPLY_MS)], caller_transcripts=[CALLER_TEXT]
    )
    bridge_sip = free_port()
    bridge_rtp = free_port() & ~1
    phone_sip = free_port()
    phone_rtp = free_port() & ~1

    home = tmp_path / "baresip"
    dumps = home / "dumps"
    dumps.mkdir(parents=True)
    microphone = home / "caller.wav"
    write_ulaw8k_wav(microphone, load_clip("caller_1") + b"\xff" * 8000 * TRAILING_SILENCE_S)
    assert MODULES is not None
    _write_config(home, MODULES, phone_sip, phone_rtp, microphone, dumps)

    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{bridge_sip}",
                BRIDGE_RTP_PORTS=f"{bridge_rtp}-{bridge_rtp + 40}",
            )
        )
        # -s traces every SIP message to the console; -t is a backstop should the call never
        # end, and the PID-bounded stop below is the last resort.
        phone = await asyncio.create_subprocess_exec(
            "baresip",
            "-4",
            "-s",
            "-f",
            str(home),
            "-t",
            "20",
            "-e",
            f"/dial sip:agent@127.0.0.1:{bridge_sip}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=home,
        )
        console = _Console()
        assert phone.stdout is not None
        reader = asyncio.create_task(console.collect(phone.stdout))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(console.over.wait(), 15)
        finally:
            await _stop(phone)
            await asyncio.wait_for(reader, 5)
        record = await _finished_sip_call(bridge)

    trace = console.text
    invite = re.search(r"^INVITE sip:agent@.*?^Call-ID: (\S+)", trace, re.M | re.S)
    assert invite is not None, f"baresip never sent its INVITE:\n{trace[-4000:]}"
    assert re.search(r"^BYE sip:", trace, re.M), f"baresip never hung up:\n{trace[-4000:]}"
    heard_files = sorted(dumps.glob("dump-*-dec.wav"))
    assert heard_files, f"baresip received no call audio:\n{trace[-4000:]}"
    heard = read_wav_as_ulaw8k(heard_files[0])

    # What the caller notices: the agent talking for about as long as its reply lasts, one
    # unbroken stretch of voice far above the silence around it, and that voice is the
    # agent's reply.
    run_start, run_length = _longest_voiced_run(heard)
    assert run_length * 20 >= REPLY_MS * 0.8, (run_length, len(heard) // FRAME, trace[-3000:])
    voice = heard[run_start * FRAME : (run_start + run_length) * FRAME]
    rest = heard[: run_start * FRAME] + heard[(run_start + run_length) * FRAME :]
    assert len(rest) >= 8000, "nothing but the reply was heard: the line never went quiet"
    assert ulaw_rms_dbfs(voice) - ulaw_rms_dbfs(rest) > 30
    assert _correlation(script.reply(0).render(), heard) > 0.9

    assert record is not None, bridge.log()[-3000:]
    assert record["channel"] == "sip"
    assert record["sip_call_id"] == invite[1]
    assert (record["from"], record["to"]) == ("caller", "agent")
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("caller", CALLER_TEXT),
        ("agent", REPLY_TEXT),
    ]
    assert "Traceback" not in bridge.log()
