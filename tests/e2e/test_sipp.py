"""SIPp, an independent SIP implementation, calls the bridge's native SIP listener.

Each test runs one scenario from ``tests/sipp/`` with ``sipp`` (Debian package
``sip-tester``) against ``bridge serve`` on 127.0.0.1, then checks what a caller or an
operator would notice: the scenario's verdict (exit code 0 means every expected response
came, with the checked contents), the call record in ``/api/calls`` and the bridge's
per-call RTP statistics (the ``sip.rtp_stats`` log line).

Most tests share one bridge and the transfer tests another, whose agent may transfer
callers; those that need other settings (a digest account, a call limit, a tiny RTP port
range) start their own. SIPp gets its own SIP and media ports for
every run and is always killed by its PID.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx
import pytest
import pytest_asyncio

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_script import FakeScript, Reply, ToolCall
from bridge.devtools.ports import free_port_block

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env, run_bridge

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"
SIPP_PCAPS = Path("/usr/share/sip-tester")
CAP_NET_RAW = 13

pytestmark = [
    pytest.mark.skipif(
        SIPP is None,
        reason="sipp is not installed (on Debian: apt-get install sip-tester)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

StartBridge = Callable[[dict[str, str]], RunningBridge]

CALLER_SAYS = "Hi, is this the bridge?"
AGENT_SAYS = "Hello from the bridge over SIP."


def _script() -> FakeScript:
    return FakeScript(
        replies=[Reply(AGENT_SAYS, duration_ms=1500)], caller_transcripts=[CALLER_SAYS]
    )


def _can_send_raw_packets() -> bool:
    """Whether this process (and so SIPp) may open raw sockets: ``play_pcap_audio`` needs it."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", status, re.M)
    return match is not None and bool(int(match[1], 16) & (1 << CAP_NET_RAW))


needs_raw_socket = pytest.mark.skipif(
    not _can_send_raw_packets(),
    reason="SIPp's play_pcap_audio sends through a raw socket: needs root or CAP_NET_RAW",
)


# -- running SIPp ---------------------------------------------------------------------------


@dataclass
class SippRun:
    """One finished SIPp run. ``call_id_prefix`` starts the Call-ID of each of its calls."""

    returncode: int
    call_id_prefix: str
    messages: str  # every SIP message sent and received (-trace_msg)
    errors: str  # why a call failed (-trace_err)
    logs: str  # the scenario's <log> lines (-trace_logs)
    screen: str

    def explain(self) -> str:
        return f"sipp exit {self.returncode}\n{self.errors[-3000:]}\n{self.screen[-2000:]}"

    def received(self) -> list[str]:
        """The SIP messages SIPp received, in order."""
        return self._messages("received")

    def sent(self) -> list[str]:
        """The SIP messages SIPp sent, in order."""
        return self._messages("sent")

    def responses(self, status: int, cseq: str) -> list[str]:
        """The ``status`` responses SIPp received for requests with CSeq ``cseq``."""
        return [
            m
            for m in self.received()
            if m.startswith(f"SIP/2.0 {status} ")
            and re.search(rf"^CSeq:\s*{cseq}\s*$", m, re.M | re.I)
        ]

    def _messages(self, direction: str) -> list[str]:
        out = []
        for block in re.split(r"^-{10,}.*$", self.messages, flags=re.M):
            _, sep, message = block.partition(f"message {direction}")
            if sep:
                out.append(message.split("\n", 1)[1].strip())
        return out


def to_tag(message: str) -> str | None:
    match = re.search(r"^(?:To|t):[^\n]*;tag=([^;>\s]+)", message, re.M | re.I)
    return match[1] if match else None


def _create(path: Path) -> BinaryIO:
    """A new file for SIPp's screen output (its curses screen goes to stdout)."""
    return path.open("wb")


def new_label(scenario: str) -> str:
    """A unique start for the Call-IDs of one SIPp run (``-cid_str``)."""
    return f"{Path(scenario).stem}-{secrets.token_hex(4)}"


# A port found free may be taken by another process before SIPp binds it; SIPp then stops
# before sending anything, and the run is tried again on other ports.
_BIND_TRIES = 3


async def run_sipp(
    sip_port: int,
    scenario: str,
    cwd: Path,
    *options: str,
    label: str | None = None,
    timeout_s: int = 30,
) -> SippRun:
    """Run ``tests/sipp/<scenario>`` against the bridge on ``sip_port`` and wait for it."""
    label = label or new_label(scenario)
    for attempt in range(_BIND_TRIES):
        run = await _run_sipp_once(sip_port, scenario, cwd, options, label, timeout_s, attempt)
        taken = "Address already in use" in run.errors + run.screen
        if run.returncode == 0 or not taken or run.messages:
            break
    return run


async def _run_sipp_once(
    sip_port: int,
    scenario: str,
    cwd: Path,
    options: tuple[str, ...],
    label: str,
    timeout_s: int,
    attempt: int,
) -> SippRun:
    assert SIPP is not None
    files = {name: cwd / f"{label}.{attempt}.{name}" for name in ("msg", "err", "log", "screen")}
    args = [
        SIPP,
        f"127.0.0.1:{sip_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(free_port_block(1)),
        # The media port: -rtp_echo also takes the port two above it.
        "-mp",
        str(free_port_block(4, even=True)),
        "-cid_str",
        f"{label}-%u-%p@%s",
        "-nostdin",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-recv_timeout",
        "5000",
        "-trace_msg",
        "-message_file",
        str(files["msg"]),
        "-trace_err",
        "-error_file",
        str(files["err"]),
        "-trace_logs",
        "-log_file",
        str(files["log"]),
        *options,
    ]
    if "-m" not in options:
        args += ["-m", "1"]
    with _create(files["screen"]) as screen:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=screen, stderr=subprocess.STDOUT
        )
    try:
        returncode = await asyncio.wait_for(proc.wait(), timeout_s + 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    def read(name: str) -> str:
        path = files[name]
        return path.read_text(errors="replace") if path.exists() else ""

    return SippRun(returncode, f"{label}-", read("msg"), read("err"), read("log"), read("screen"))


# -- what the bridge says -------------------------------------------------------------------


async def _calls(bridge: RunningBridge, prefix: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(headers=headers) as http:
        response = await http.get(f"{bridge.url}/api/calls", params={"limit": 200})
    calls = cast(list[dict[str, Any]], response.json()["calls"])
    return [c for c in calls if (c.get("sip_call_id") or "").startswith(prefix)]


async def call_record(
    bridge: RunningBridge, prefix: str, *, finished: bool = True
) -> dict[str, Any]:
    """The call record of the SIPp call whose Call-ID starts with ``prefix``; by default
    once the call is over."""
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    for _ in range(150):
        mine = await _calls(bridge, prefix)
        if mine and (not finished or mine[0]["status"] != "in_progress"):
            async with httpx.AsyncClient(headers=headers) as http:
                response = await http.get(f"{bridge.url}/api/calls/{mine[0]['call_sid']}")
            return cast(dict[str, Any], response.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"no call record for {prefix}*:\n{bridge.log()[-3000:]}")


async def rtp_stats(bridge: RunningBridge, prefix: str) -> dict[str, Any]:
    """The ``sip.rtp_stats`` log line of the call whose Call-ID starts with ``prefix``."""
    for _ in range(150):
        for line in bridge.log().splitlines():
            if '"sip.rtp_stats"' not in line:
                continue
            entry = cast(dict[str, Any], json.loads(line))
            if str(entry.get("sip_call_id", "")).startswith(prefix):
                return entry
        await asyncio.sleep(0.1)
    raise AssertionError(f"no sip.rtp_stats for {prefix}*:\n{bridge.log()[-3000:]}")


def assert_no_errors(bridge: RunningBridge, since: int) -> None:
    """Nothing went wrong inside the bridge after log offset ``since``."""
    new = bridge.log()[since:]
    assert "Traceback" not in new and '"level": "error"' not in new, new[-4000:]


# -- bridges --------------------------------------------------------------------------------


@dataclass
class SipBridge:
    bridge: RunningBridge
    sip_port: int

    def log_offset(self) -> int:
        return len(self.bridge.log())


def _sip_env(sip_port: int, rtp_ports: str, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_SIP_LISTEN": f"udp:127.0.0.1:{sip_port}",
        "BRIDGE_RTP_PORTS": rtp_ports,
        **extra,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sip(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SipBridge]:
    """One bridge for the tests that need no special settings."""
    sip_port = free_port_block(1)
    rtp_low = free_port_block(2, even=True)
    async with fake_server("openai", script=_script()) as fake:
        env = provider_env(fake, "openai", **_sip_env(sip_port, f"{rtp_low}-{rtp_low + 60}"))
        with run_bridge(tmp_path_factory.mktemp("sipp-bridge"), env) as bridge:
            yield SipBridge(bridge, sip_port)


# -- calls ----------------------------------------------------------------------------------


async def test_caller_speech_reaches_the_agent_and_the_reply_reaches_the_caller(
    sip: SipBridge, tmp_path: Path
) -> None:
    # The caller's clip, then silence so the model hears the end of the turn.
    (tmp_path / "caller.ulaw").write_bytes(load_clip("caller_1") + b"\xff" * 12000)
    since = sip.log_offset()
    run = await run_sipp(
        sip.sip_port, "stream_pcmu.xml", tmp_path, "-rtp_echo", "-s", "+15557650000"
    )
    assert run.returncode == 0, run.explain()

    record = await call_record(sip.bridge, run.call_id_prefix)
    assert record["channel"] == "sip"
    assert (record["from"], record["to"]) == ("+15551230000", "+15557650000")
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("caller", CALLER_SAYS),
        ("agent", AGENT_SAYS),
    ]
    stats = await rtp_stats(sip.bridge, run.call_id_prefix)
    # SIPp echoes what it receives: the bridge's own packets came back, so the caller got
    # the bridge's RTP all through the call. The caller's stream arrived whole.
    assert stats["received_looped"] > 100, stats
    assert stats["received_packets"] > 150 and stats["received_lost"] == 0, stats
    assert_no_errors(sip.bridge, since)


async def test_options_is_answered_200_with_allow(sip: SipBridge, tmp_path: Path) -> None:
    run = await run_sipp(sip.sip_port, "options.xml", tmp_path)
    assert run.returncode == 0, run.explain()


async def test_bye_for_an_unknown_dialog_gets_481(sip: SipBridge, tmp_path: Path) -> None:
    run = await run_sipp(sip.sip_port, "bye_unknown_dialog.xml", tmp_path)
    assert run.returncode == 0, run.explain()
    assert await _calls(sip.bridge, run.call_id_prefix) == []


async def test_cancel_after_the_answer_gets_200_and_the_call_goes_on(
    sip: SipBridge, tmp_path: Path
) -> None:
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "cancel_after_answer.xml", tmp_path, "-rtp_echo")
    assert run.returncode == 0, run.explain()
    # RFC 3261 section 9.2: the 200 for the CANCEL carries the To tag of the answer. A
    # phone that takes the tag of the latest response for its ACK (as SIPp does) would
    # otherwise acknowledge a dialog that does not exist.
    answer = run.responses(200, "1 INVITE")[0]
    (cancel_ok,) = run.responses(200, "1 CANCEL")
    assert to_tag(cancel_ok) == to_tag(answer), run.messages[-5000:]

    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    stats = await rtp_stats(sip.bridge, run.call_id_prefix)
    assert stats["received_looped"] > 10, stats  # the call went on, with audio, after the ACK
    assert_no_errors(sip.bridge, since)


async def test_a_retransmitted_invite_makes_one_call(sip: SipBridge, tmp_path: Path) -> None:
    since = sip.log_offset()
    # -nr: otherwise SIPp answers each repeat of the 100 Trying with its INVITE again.
    run = await run_sipp(sip.sip_port, "invite_retransmitted.xml", tmp_path, "-nr")
    assert run.returncode == 0, run.explain()
    invites = [m for m in run.sent() if m.startswith("INVITE ")]
    branches = {re.findall(r"branch=([^;\s]+)", m)[0] for m in invites}
    assert len(invites) == 2 and len(branches) == 1, invites
    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert len(await _calls(sip.bridge, run.call_id_prefix)) == 1
    assert_no_errors(sip.bridge, since)


async def test_the_answer_is_resent_until_a_late_ack(sip: SipBridge, tmp_path: Path) -> None:
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "late_ack.xml", tmp_path, "-rtp_echo")
    assert run.returncode == 0, run.explain()
    answers = run.responses(200, "1 INVITE")
    # Held back 1.8 s, the ACK lets T1 (0.5 s) and 2*T1 pass: the 200 came more than once.
    assert len(answers) >= 2, run.messages[-4000:]

    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    stats = await rtp_stats(sip.bridge, run.call_id_prefix)
    assert stats["received_looped"] > 20, stats  # the call had audio after the ACK
    assert_no_errors(sip.bridge, since)


async def test_hold_reinvite_is_answered_recvonly(sip: SipBridge, tmp_path: Path) -> None:
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "hold.xml", tmp_path)
    assert run.returncode == 0, run.explain()
    assert re.search(r"re-INVITE answer direction: a=(recvonly|inactive)", run.logs), run.logs
    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert_no_errors(sip.bridge, since)


@needs_raw_socket
async def test_an_rfc4733_digit_lands_in_the_call_record(sip: SipBridge, tmp_path: Path) -> None:
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "dtmf_rfc4733.xml", tmp_path)
    assert run.returncode == 0, run.explain()
    record = await call_record(sip.bridge, run.call_id_prefix)
    digits = [e["digit"] for e in record["events"] if e["type"] == "dtmf"]
    assert digits == ["5"], record["events"]
    assert_no_errors(sip.bridge, since)


async def test_a_pcma_only_offer_is_answered_with_pcma(sip: SipBridge, tmp_path: Path) -> None:
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "pcma_only.xml", tmp_path, "-rtp_echo")
    assert run.returncode == 0, run.explain()
    assert "RTP/AVP 8 101" in run.logs, run.logs
    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    stats = await rtp_stats(sip.bridge, run.call_id_prefix)
    assert stats["received_looped"] > 20, stats
    assert_no_errors(sip.bridge, since)


@needs_raw_socket
@pytest.mark.timing
async def test_30ms_pcma_packets_arrive_whole(sip: SipBridge, tmp_path: Path) -> None:
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "pcma_30ms.xml", tmp_path)
    assert run.returncode == 0, run.explain()
    stats = await rtp_stats(sip.bridge, run.call_id_prefix)
    # g711a.pcap holds 236 packets with consecutive sequence numbers.
    assert 225 <= stats["received_packets"] <= 236, stats
    assert stats["received_lost"] == 0, stats
    record = await call_record(sip.bridge, run.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert_no_errors(sip.bridge, since)


async def test_no_common_codec_gets_488(sip: SipBridge, tmp_path: Path) -> None:
    since = sip.log_offset()
    run = await run_sipp(sip.sip_port, "no_common_codec.xml", tmp_path)
    assert run.returncode == 0, run.explain()
    assert await _calls(sip.bridge, run.call_id_prefix) == []
    assert_no_errors(sip.bridge, since)


# -- digest authentication ------------------------------------------------------------------

# One challenge header line, with its CRLF.
_SHA256_CHALLENGE = re.compile(
    rb"^WWW-Authenticate:[^\r\n]*algorithm=SHA-256[^\r\n]*\r\n", re.I | re.M
)


class _Md5OnlyRelay(asyncio.DatagramProtocol):
    """Stands between SIPp and the bridge and passes every datagram on, except the bridge's
    SHA-256 challenges. The bridge offers SHA-256 first and MD5 second (RFC 8760 order);
    SIPp 3.6.1 knows only MD5 and gives up on the first challenge it reads instead of
    taking the first it supports, so it is shown what an MD5-only phone would pick."""

    def __init__(self, bridge: tuple[str, int]) -> None:
        self.bridge = bridge
        self.phone: tuple[str, int] | None = None
        self.challenges: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if (addr[0], addr[1]) == self.bridge:
            text = data.decode("utf-8", "replace")
            self.challenges += re.findall(r"^WWW-Authenticate:\s*(.*?)\r?$", text, re.I | re.M)
            if self.phone is not None:
                self.transport.sendto(_SHA256_CHALLENGE.sub(b"", data), self.phone)
        else:
            self.phone = (addr[0], addr[1])
            self.transport.sendto(data, self.bridge)


async def test_a_caller_outside_the_allow_list_passes_the_digest_challenge(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    sip_port = free_port_block(1)
    rtp_low = free_port_block(2, even=True)
    async with fake_server("openai", script=_script()) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                **_sip_env(
                    sip_port,
                    f"{rtp_low}-{rtp_low + 20}",
                    # 127.0.0.1 is not allowed in: every caller must authenticate.
                    BRIDGE_SIP_ALLOW="192.0.2.0/24",
                    BRIDGE_SIP_USERNAME="alice",
                    BRIDGE_SIP_PASSWORD="correct-horse",
                ),
            )
        )
        loop = asyncio.get_running_loop()
        relay_transport, relay = await loop.create_datagram_endpoint(
            lambda: _Md5OnlyRelay(("127.0.0.1", sip_port)), local_addr=("127.0.0.1", 0)
        )
        relay_port = relay_transport.get_extra_info("sockname")[1]
        try:
            refused = await run_sipp(
                relay_port, "digest_wrong_password.xml", tmp_path, "-au", "alice", "-ap", "wrong"
            )
            assert refused.returncode == 0, refused.explain()
            run = await run_sipp(
                relay_port, "digest_auth.xml", tmp_path, "-au", "alice", "-ap", "correct-horse"
            )
            assert run.returncode == 0, run.explain()
            record = await call_record(bridge, run.call_id_prefix)
        finally:
            relay_transport.close()

    assert any(
        "algorithm=MD5" in c and 'realm="bridge"' in c and 'qop="auth"' in c
        for c in relay.challenges
    ), relay.challenges
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert await _calls(bridge, refused.call_id_prefix) == []
    assert_no_errors(bridge, 0)


# -- capacity -------------------------------------------------------------------------------


async def test_a_call_beyond_the_limit_gets_503_with_retry_after(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    sip_port = free_port_block(1)
    rtp_low = free_port_block(2, even=True)
    async with fake_server("openai", script=_script()) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                **_sip_env(sip_port, f"{rtp_low}-{rtp_low + 20}", BRIDGE_SIP_MAX_CALLS="1"),
            )
        )
        label = new_label("call.xml")
        first = asyncio.create_task(
            run_sipp(sip_port, "call.xml", tmp_path, "-d", "4000", label=label)
        )
        try:
            # Wait until the first call is up, then try a second one.
            await _wait_for_live_call(bridge, first, f"{label}-")
            busy = await run_sipp(sip_port, "busy.xml", tmp_path)
            held = await first
        finally:
            if not first.done():
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)

    assert busy.returncode == 0, busy.explain()
    assert re.search(r"503, Retry-After: \d+", busy.logs), busy.logs
    assert held.returncode == 0, held.explain()
    record = await call_record(bridge, held.call_id_prefix)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert await _calls(bridge, busy.call_id_prefix) == []
    assert_no_errors(bridge, 0)


async def _wait_for_live_call(
    bridge: RunningBridge, run: asyncio.Task[SippRun], prefix: str
) -> None:
    """Return once the call whose Call-ID starts with ``prefix`` is going on ``bridge``."""
    for _ in range(100):
        if run.done():
            raise AssertionError(f"the first call ended early: {run.result().explain()}")
        if any(c["status"] == "in_progress" for c in await _calls(bridge, prefix)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the first call never started:\n{bridge.log()[-3000:]}")


# -- transfer -------------------------------------------------------------------------------

AGENT_NUMBER = "+15557650000"
RECEPTION = "+15550001111"
TRANSFER_SAYS = "Let me put you through."
REFUSED_SAYS = "Sorry, reception is busy."


def _transfer_script() -> FakeScript:
    # Each call walks the script from its start: the first reply transfers; the second is
    # spoken only when the transfer was refused and the model was told.
    return FakeScript(
        replies=[
            Reply(
                TRANSFER_SAYS,
                duration_ms=800,
                tool_calls=(ToolCall("transfer_call", {"target": "reception"}),),
            ),
            Reply(REFUSED_SAYS, duration_ms=800),
        ],
        caller_transcripts=["Reception, please."],
    )


def _transfer_agents(path: Path) -> Path:
    path.write_text(
        f"""
[agents.front-desk]
numbers = ["{AGENT_NUMBER}"]
instructions = "You are the front desk; callers who ask for reception are put through."
tools = ["transfer_call"]
transfer_targets = {{ reception = "{RECEPTION}" }}
"""
    )
    return path


@dataclass
class TransferBridge(SipBridge):
    fake: FakeRealtimeServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def transfer_sip(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TransferBridge]:
    """A bridge whose agent for AGENT_NUMBER may transfer callers to reception."""
    home = tmp_path_factory.mktemp("sipp-transfer-bridge")
    sip_port = free_port_block(1)
    rtp_low = free_port_block(2, even=True)
    async with fake_server("openai", script=_transfer_script()) as fake:
        env = provider_env(
            fake,
            "openai",
            **_sip_env(
                sip_port,
                f"{rtp_low}-{rtp_low + 20}",
                BRIDGE_AGENTS=str(_transfer_agents(home / "agents.toml")),
            ),
        )
        with run_bridge(home, env) as bridge:
            yield TransferBridge(bridge, sip_port, fake)


async def _transfer_call(transfer_sip: TransferBridge, scenario: str, cwd: Path) -> SippRun:
    # The caller asks for reception, then stays quiet while the agent answers.
    (cwd / "caller.ulaw").write_bytes(load_clip("caller_1") + b"\xff" * 12000)
    return await run_sipp(transfer_sip.sip_port, scenario, cwd, "-s", AGENT_NUMBER, timeout_s=15)


def _refer(run: SippRun) -> str:
    (refer,) = [m for m in run.received() if m.startswith("REFER ")]
    return refer


async def test_a_transfer_accepted_by_the_callers_pbx_ends_the_call_with_bye(
    transfer_sip: TransferBridge, tmp_path: Path
) -> None:
    since = transfer_sip.log_offset()
    run = await _transfer_call(transfer_sip, "refer_accepted.xml", tmp_path)
    assert run.returncode == 0, run.explain() + transfer_sip.bridge.log()[since:][-3000:]

    # RFC 3515: the target as a SIP URI at the caller's host, and who asked for it.
    refer = _refer(run)
    assert re.search(rf"^Refer-To:\s*<sip:\{RECEPTION}@127\.0\.0\.1>\s*$", refer, re.M), refer
    assert re.search(r"^Referred-By:\s*\S", refer, re.M), refer
    # The bridge left the call, and still took the PBX's report on the new call.
    assert [m for m in run.received() if m.startswith("BYE ")], run.messages[-5000:]
    assert run.responses(200, "2 NOTIFY"), run.messages[-5000:]

    record = await call_record(transfer_sip.bridge, run.call_id_prefix)
    assert record["agent"] == "front-desk"
    assert (record["status"], record["end_reason"]) == ("completed", "transferred")
    transfers = [e for e in record["events"] if e["type"] == "transfer"]
    assert [e["target"] for e in transfers] == ["reception"], record["events"]
    assert [t["text"] for t in record["turns"] if t["role"] == "agent"] == [TRANSFER_SAYS]
    assert_no_errors(transfer_sip.bridge, since)


async def test_a_transfer_refused_by_the_callers_pbx_is_told_to_the_model_and_the_call_goes_on(
    transfer_sip: TransferBridge, tmp_path: Path
) -> None:
    since = transfer_sip.log_offset()
    run = await _transfer_call(transfer_sip, "refer_refused.xml", tmp_path)
    assert run.returncode == 0, run.explain() + transfer_sip.bridge.log()[since:][-3000:]
    refer = _refer(run)
    assert re.search(rf"^Refer-To:\s*<sip:\{RECEPTION}@127\.0\.0\.1>\s*$", refer, re.M), refer
    # The caller hung up; the bridge never did.
    assert not [m for m in run.received() if m.startswith("BYE ")], run.messages[-5000:]

    record = await call_record(transfer_sip.bridge, run.call_id_prefix)
    assert record["agent"] == "front-desk"
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert not [e for e in record["events"] if e["type"] == "transfer"], record["events"]
    tools = [e for e in record["events"] if e["type"] == "tool_call"]
    assert [(e["name"], e["ok"]) for e in tools] == [("transfer_call", False)], tools
    assert tools[0]["arguments"] == {"target": "reception"}
    # The model was told why, and its next words were spoken.
    (output,) = transfer_sip.fake.sessions[-1].tool_outputs
    assert "603" in output.output, output
    assert [t["text"] for t in record["turns"] if t["role"] == "agent"] == [
        TRANSFER_SAYS,
        REFUSED_SAYS,
    ]
    assert_no_errors(transfer_sip.bridge, since)
