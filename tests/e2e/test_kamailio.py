"""Kamailio, with the project's own ``infra/kamailio/kamailio.cfg``, as the SIP dispatcher in
front of real bridges.

Two ``bridge serve --sip`` processes (each its own SQLite call log) sit behind one
Kamailio; SIPp plays the caller and only ever talks SIP to Kamailio. A call counts as served
when SIPp saw the whole exchange (200 OK, its ACK and BYE through the proxy, 200 to the BYE),
the bridge's record says it completed with the caller's words and the agent's reply, and the
bridge's RTP statistics show media both ways, straight between SIPp and the bridge.

Failover is checked with stand-ins for bridges that are full (every INVITE gets 503 with
Retry-After, as a bridge at ``BRIDGE_SIP_MAX_CALLS`` or draining says) or dead (nothing
answers). Every process is started on free ports on 127.0.0.1 and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port_block
from bridge.protocols.sip.message import (
    SipParseError,
    SipRequest,
    parse_message,
    response_for,
    serialize,
)

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env, run_bridge

# Debian installs it in /usr/sbin, which is not on every user's PATH.
KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
SIPP = shutil.which("sipp")
CONFIG = Path(__file__).resolve().parents[2] / "infra" / "kamailio" / "kamailio.cfg"

pytestmark = [
    pytest.mark.skipif(
        KAMAILIO is None, reason="kamailio is not installed (on Debian: apt-get install kamailio)"
    ),
    pytest.mark.skipif(
        SIPP is None, reason="sipp is not installed (on Debian: apt-get install sip-tester)"
    ),
]
# The bridges are shared by the module's tests, so its tests share the module's loop.
module_loop = pytest.mark.asyncio(loop_scope="module")

CALLER_SAYS = "Hi, is this the bridge?"
AGENT_SAYS = "Hello from the bridge over SIP."
RTP_PORTS_PER_BRIDGE = 20


# -- bridges --------------------------------------------------------------------------------


@dataclass
class SipBridge:
    bridge: RunningBridge
    sip_port: int
    rtp_ports: range

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip_port}"


@dataclass
class Bridges:
    a: SipBridge
    b: SipBridge


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bridges(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bridges]:
    """Two bridges with SIP listeners, each with its own call log, one fake model for both."""
    script = FakeScript(
        replies=[Reply(AGENT_SAYS, duration_ms=1500)], caller_transcripts=[CALLER_SAYS]
    )
    async with fake_server("openai", script=script) as fake:
        starts = []
        for name in ("a", "b"):
            sip_port = free_port_block(1)
            rtp_low = free_port_block(RTP_PORTS_PER_BRIDGE, even=True)
            rtp = range(rtp_low, rtp_low + RTP_PORTS_PER_BRIDGE)
            env = provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port}",
                BRIDGE_RTP_PORTS=f"{rtp.start}-{rtp.stop - 1}",
            )
            home = tmp_path_factory.mktemp(f"kamailio-bridge-{name}")
            starts.append((run_bridge(home, env), sip_port, rtp))
        # Both start at once (each waits for its own /readyz in a thread); whichever did
        # start is stopped again, whatever happened to the other.
        entered = await asyncio.gather(
            *(asyncio.to_thread(context.__enter__) for context, _, _ in starts),
            return_exceptions=True,
        )
        try:
            for outcome in entered:
                if isinstance(outcome, BaseException):
                    raise outcome
            yield Bridges(
                *(
                    SipBridge(cast(RunningBridge, bridge), sip_port, rtp)
                    for bridge, (_, sip_port, rtp) in zip(entered, starts, strict=True)
                )
            )
        finally:
            for outcome, (context, _, _) in zip(entered, starts, strict=True):
                if not isinstance(outcome, BaseException):
                    context.__exit__(None, None, None)


async def _calls(bridge: SipBridge, prefix: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=5) as http:
        response = await http.get(f"{bridge.bridge.url}/api/calls", params={"limit": 200})
    response.raise_for_status()
    calls = cast(list[dict[str, Any]], response.json()["calls"])
    return [c for c in calls if (c.get("sip_call_id") or "").startswith(prefix)]


async def _finished_record(bridge: SipBridge, prefix: str) -> dict[str, Any]:
    """The full record of the one call on ``bridge`` whose Call-ID starts with ``prefix``."""
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    for _ in range(100):
        mine = await _calls(bridge, prefix)
        if mine and mine[0]["status"] != "in_progress":
            assert len(mine) == 1, mine
            async with httpx.AsyncClient(headers=headers, timeout=5) as http:
                url = f"{bridge.bridge.url}/api/calls/{mine[0]['call_sid']}"
                return cast(dict[str, Any], (await http.get(url)).json())
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"no finished call {prefix}* on {bridge.uri}:\n{bridge.bridge.log()[-3000:]}"
    )


async def _rtp_stats(bridge: SipBridge, prefix: str) -> dict[str, Any]:
    """The bridge's ``sip.rtp_stats`` log line for the call whose Call-ID starts with ``prefix``."""
    for _ in range(100):
        for line in bridge.bridge.log().splitlines():
            if '"sip.rtp_stats"' in line:
                entry = cast(dict[str, Any], json.loads(line))
                if str(entry.get("sip_call_id", "")).startswith(prefix):
                    return entry
        await asyncio.sleep(0.1)
    raise AssertionError(f"no sip.rtp_stats for {prefix}*:\n{bridge.bridge.log()[-3000:]}")


def _assert_no_errors(bridge: SipBridge) -> None:
    log = bridge.bridge.log()
    assert "Traceback" not in log and '"level": "error"' not in log, log[-4000:]


# -- stand-ins for a full and a dead bridge -------------------------------------------------


@dataclass
class StandIn(asyncio.DatagramProtocol):
    """A SIP address in the dispatcher list that refuses every INVITE with ``status`` (and
    Retry-After), or with ``status=None`` answers nothing at all, like a dead host."""

    status: int | None
    #: (method, Call-ID) of every request received, retransmissions included.
    requests: list[tuple[str, str]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            request = parse_message(data)
        except SipParseError:
            return
        if not isinstance(request, SipRequest):
            return
        self.requests.append((request.method, request.call_id))
        if self.status is None or request.method == "ACK" or self.transport is None:
            return
        if request.method == "INVITE":
            reason = "Service Unavailable" if self.status == 503 else "Server Internal Error"
            extra = [("Retry-After", "5")]
            response = response_for(request, self.status, reason, extra, to_tag="standin")
        else:
            response = response_for(request, 200, "OK", to_tag="standin")
        self.transport.sendto(serialize(response), addr)

    def invited(self, prefix: str) -> set[str]:
        """Call-IDs starting with ``prefix`` that came here in an INVITE."""
        return {
            cid for method, cid in self.requests if method == "INVITE" and cid.startswith(prefix)
        }


async def _stand_in(status: int | None) -> tuple[StandIn, asyncio.DatagramTransport, str]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: StandIn(status), local_addr=("127.0.0.1", free_port_block(1))
    )
    port = transport.get_extra_info("sockname")[1]
    return protocol, transport, f"sip:127.0.0.1:{port}"


# -- Kamailio -------------------------------------------------------------------------------


@dataclass
class Kamailio:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _defines(list_path: Path, ping_interval: int) -> list[str]:
    return [
        *("-A", f'DISPATCHER_LIST="{list_path}"'),
        *("-A", f"PING_INTERVAL={ping_interval}"),
    ]


def _answers_options(port: int) -> bool:
    """Whether Kamailio on ``port`` answers an OPTIONS addressed to itself with 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        here = s.getsockname()[1]
        options = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{here}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@test\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(options.encode(), ("127.0.0.1", port))
        try:
            answer = s.recv(65536)
        except OSError:
            return False
    return answer.startswith(b"SIP/2.0 200 ")


@contextmanager
def run_kamailio(home: Path, bridges: list[str], *, ping_interval: int) -> Iterator[Kamailio]:
    """Kamailio in the foreground with the project's config, dispatching to ``bridges`` (in
    that order: earlier ones get a higher priority), on a free UDP port of 127.0.0.1. Ready
    once it answers an OPTIONS; stopped by its PID, its children with it."""
    assert KAMAILIO is not None
    home.mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(exist_ok=True)
    list_path = home / "dispatcher.list"
    list_path.write_text(
        "".join(f"1 {uri} 0 {len(bridges) - n}\n" for n, uri in enumerate(bridges))
    )
    port = free_port_block(1)
    log_path = home / "kamailio.log"
    args = [
        KAMAILIO,
        *("-DD", "-E"),  # foreground, log to stderr
        *("-f", str(CONFIG)),
        *_defines(list_path, ping_interval),
        *("-l", f"udp:127.0.0.1:{port}"),
        "-T",  # no TCP: the test speaks UDP only
        *("-A", "CHILDREN=2"),
        *("-m", "64", "-M", "8"),
        *("-w", str(home), "-Y", str(home / "run"), "-P", str(home / "kamailio.pid")),
    ]
    with open(log_path, "wb") as log_file:
        # Its own process group, whose id is its PID: the children go with it.
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    kamailio = Kamailio(port, proc, log_path)
    try:
        deadline = time.monotonic() + 10
        while not _answers_options(port):
            if proc.poll() is not None:
                raise RuntimeError(f"kamailio exited early:\n{kamailio.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kamailio not ready in time:\n{kamailio.log()[-4000:]}")
        yield kamailio
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        # Anything of its group still there (a child the main process did not reap).
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# -- SIPp -----------------------------------------------------------------------------------

# A caller that follows the route set (rrs, [routes], [next_url]): its ACK and BYE go to
# Kamailio with a Route header, and Kamailio passes them on to the bridge's Contact. It
# speaks caller.ulaw and echoes the bridge's RTP back (-rtp_echo), then hangs up after -d ms.
CALL_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="Call through a record-routing proxy">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec rtp_stream="caller.ulaw,1,0"/></action></nop>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""

# A caller turned away: 503 with a Retry-After, acknowledged in the INVITE's transaction.
REFUSED_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="Refused through the proxy">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="503">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="Retry-After:" check_it="true" assign_to="retry"/>
      <log message="503, Retry-After: [$retry]"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-2];rport
      From: <sip:+15551230000@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="100"/>
</scenario>
"""


@dataclass
class SippRun:
    returncode: int
    call_id_prefix: str
    messages: str  # every SIP message sent and received (-trace_msg)
    errors: str
    logs: str

    def explain(self) -> str:
        return f"sipp exit {self.returncode}\n{self.errors[-3000:]}\n{self.messages[-3000:]}"

    def received(self) -> list[str]:
        out = []
        for block in re.split(r"^-{10,}.*$", self.messages, flags=re.M):
            _, sep, message = block.partition("message received")
            if sep:
                out.append(message.split("\n", 1)[1].strip())
        return out

    def answer(self) -> str:
        """The 200 OK to the INVITE."""
        (ok,) = [
            m
            for m in self.received()
            if m.startswith("SIP/2.0 200 ") and re.search(r"^CSeq:\s*1 INVITE", m, re.M)
        ]
        return ok


async def run_sipp(
    proxy_port: int, scenario: str, cwd: Path, *options: str, timeout_s: int = 20
) -> SippRun:
    """One SIPp call with ``scenario`` (the text of a scenario file) to the proxy on
    ``proxy_port``; SIPp's own SIP and media ports are free ones. Killed by its PID.

    A port found free may be taken before SIPp binds it; SIPp then stops before sending
    anything, and the call is tried again on other ports (three tries in all)."""
    for _ in range(3):
        run = await _run_sipp_once(proxy_port, scenario, cwd, options, timeout_s)
        if run.returncode == 0 or "Address already in use" not in run.errors or run.messages:
            break
    return run


async def _run_sipp_once(
    proxy_port: int, scenario: str, cwd: Path, options: tuple[str, ...], timeout_s: int
) -> SippRun:
    assert SIPP is not None
    label = f"kam-{secrets.token_hex(4)}"
    scenario_path = cwd / f"{label}.xml"
    scenario_path.write_text(scenario)
    files = {name: cwd / f"{label}.{name}" for name in ("msg", "err", "log")}
    args = [
        SIPP,
        f"127.0.0.1:{proxy_port}",
        *("-sf", str(scenario_path)),
        *("-i", "127.0.0.1", "-mi", "127.0.0.1"),
        *("-p", str(free_port_block(1))),
        # The media port: -rtp_echo also takes the port two above it.
        *("-mp", str(free_port_block(4, even=True))),
        *("-cid_str", f"{label}-%u-%p@%s"),
        *("-m", "1", "-nostdin"),
        *("-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", "8000"),
        *("-trace_msg", "-message_file", str(files["msg"])),
        *("-trace_err", "-error_file", str(files["err"])),
        *("-trace_logs", "-log_file", str(files["log"])),
        *options,
    ]
    # SIPp's screen is not needed: the traces say what happened.
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        returncode = await asyncio.wait_for(proc.wait(), timeout_s + 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    def read(name: str) -> str:
        path = files[name]
        return path.read_text(errors="replace") if path.exists() else ""

    return SippRun(returncode, f"{label}-", read("msg"), read("err"), read("log"))


def _caller_audio(cwd: Path) -> None:
    # The caller's clip, then silence so the model hears the end of the turn.
    (cwd / "caller.ulaw").write_bytes(load_clip("caller_1") + b"\xff" * 12000)


# -- the tests ------------------------------------------------------------------------------


def test_the_config_passes_kamailios_own_check(tmp_path: Path) -> None:
    assert KAMAILIO is not None
    list_path = tmp_path / "dispatcher.list"
    list_path.write_text("1 sip:127.0.0.1:5090 0 0\n")
    # As deployed (defaults, /etc/kamailio/dispatcher.list), and with the tests' overrides.
    for extra in ([], [*_defines(list_path, 1), "-l", "udp:127.0.0.1:5060"]):
        check = subprocess.run(
            [KAMAILIO, "-c", "-f", str(CONFIG), *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        output = check.stdout + check.stderr
        assert check.returncode == 0, output
        assert "config file ok" in output, output
        assert "warning" not in output.lower(), output


@module_loop
async def test_two_calls_through_kamailio_land_one_on_each_bridge(
    bridges: Bridges, tmp_path: Path
) -> None:
    _caller_audio(tmp_path)
    # Last in the set, a bridge that never answers: round robin gives the two calls to A and
    # B, and the probes, once a second, find it dead while the calls go on. The real bridges'
    # answers to the same probes must keep them in the rotation.
    silent, silent_transport, silent_uri = await _stand_in(None)
    try:
        with run_kamailio(
            tmp_path / "kamailio", [bridges.a.uri, bridges.b.uri, silent_uri], ping_interval=1
        ) as kamailio:

            async def call(delay_s: float) -> SippRun:
                await asyncio.sleep(delay_s)
                return await run_sipp(
                    kamailio.port, CALL_SCENARIO, tmp_path, "-rtp_echo", "-d", "6000"
                )

            # One after the other by a moment, so each is a new round of the round robin.
            first, second = await asyncio.gather(call(0), call(0.3))
            # A probe gives up after the proxy's 5 s non-INVITE timeout.
            down = f"bridge {silent_uri} is down"
            for _ in range(80):
                if down in kamailio.log():
                    break
                await asyncio.sleep(0.1)
            kamailio_log = kamailio.log()
    finally:
        silent_transport.close()

    for run in (first, second):
        assert run.returncode == 0, run.explain() + kamailio_log[-3000:]
        # Kamailio record-routed the call: the bridge copied its Record-Route into the 200,
        # and the ACK and BYE went back through it (the scenario sent them with that Route).
        answer = run.answer()
        assert re.search(
            rf"^Record-Route:\s*<sip:127\.0\.0\.1:{kamailio.port};lr=on>", answer, re.M
        ), answer

    served = {}
    for run in (first, second):
        on = [b for b in (bridges.a, bridges.b) if await _calls(b, run.call_id_prefix)]
        assert len(on) == 1, (run.call_id_prefix, on)
        served[run.call_id_prefix] = on[0]
    # Round robin: one call on each bridge.
    assert {id(b) for b in served.values()} == {id(bridges.a), id(bridges.b)}, served

    for run in (first, second):
        bridge = served[run.call_id_prefix]
        record = await _finished_record(bridge, run.call_id_prefix)
        assert record["channel"] == "sip"
        assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
        assert [(t["role"], t["text"]) for t in record["turns"]] == [
            ("caller", CALLER_SAYS),
            ("agent", AGENT_SAYS),
        ]
        # The media went straight to the bridge: the SDP answer names a port of its own RTP
        # range, the caller's stream arrived whole and the bridge's own packets came back
        # from SIPp's echo.
        media = re.search(r"^m=audio (\d+) ", run.answer(), re.M)
        assert media is not None and int(media[1]) in bridge.rtp_ports, run.answer()
        stats = await _rtp_stats(bridge, run.call_id_prefix)
        assert stats["received_packets"] > 150 and stats["received_lost"] == 0, stats
        assert stats["received_looped"] > 100, stats

    # Probing: the silent one got OPTIONS, no call, and was taken out; the bridges stayed in.
    assert [m for m, _ in silent.requests if m != "OPTIONS"] == [], silent.requests
    assert silent.requests, "no OPTIONS probe came"
    assert down in kamailio_log, kamailio_log[-3000:]
    for bridge in (bridges.a, bridges.b):
        assert f"bridge {bridge.uri} is down" not in kamailio_log, kamailio_log[-3000:]
    _assert_no_errors(bridges.a)
    _assert_no_errors(bridges.b)


@module_loop
async def test_a_dead_or_full_bridge_passes_the_call_to_the_next(
    bridges: Bridges, tmp_path: Path
) -> None:
    _caller_audio(tmp_path)
    dead, dead_transport, dead_uri = await _stand_in(None)
    full, full_transport, full_uri = await _stand_in(503)
    try:
        # In this order (by priority): the first call starts at the dead one, waits out
        # INVITE_TIMEOUT_MS, is refused by the full one and lands on bridge A; the second
        # starts at the full one. No probing, so only the calls find the dead one out.
        with run_kamailio(
            tmp_path / "kamailio", [dead_uri, full_uri, bridges.a.uri], ping_interval=0
        ) as kamailio:
            first = await run_sipp(
                kamailio.port, CALL_SCENARIO, tmp_path, "-rtp_echo", "-d", "1000"
            )
            second = await run_sipp(
                kamailio.port, CALL_SCENARIO, tmp_path, "-rtp_echo", "-d", "1000"
            )
            kamailio_log = kamailio.log()
    finally:
        dead_transport.close()
        full_transport.close()

    for run in (first, second):
        assert run.returncode == 0, run.explain() + kamailio_log[-3000:]
        record = await _finished_record(bridges.a, run.call_id_prefix)
        assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
        assert await _calls(bridges.b, run.call_id_prefix) == []
        # The caller never saw the refusal: the only final answer it got was the 200.
        finals = [m for m in run.received() if re.match(r"SIP/2\.0 [3-6]\d\d ", m)]
        assert finals == [], finals

    # The dead one got the first call's INVITE (resent until the timeout) and, marked
    # inactive, not the second; the full one refused both.
    assert dead.invited(first.call_id_prefix) and not dead.invited(second.call_id_prefix)
    assert full.invited(first.call_id_prefix) and full.invited(second.call_id_prefix)
    assert f"bridge {dead_uri} did not answer" in kamailio_log, kamailio_log[-3000:]
    assert f"bridge {dead_uri} is down" in kamailio_log, kamailio_log[-3000:]
    assert f"bridge {full_uri} answered 503" in kamailio_log, kamailio_log[-3000:]
    _assert_no_errors(bridges.a)


@module_loop
async def test_when_every_bridge_refuses_the_caller_gets_503_with_retry_after(
    tmp_path: Path,
) -> None:
    full_1, transport_1, uri_1 = await _stand_in(503)
    full_2, transport_2, uri_2 = await _stand_in(500)
    try:
        with run_kamailio(tmp_path / "kamailio", [uri_1, uri_2], ping_interval=0) as kamailio:
            run = await run_sipp(kamailio.port, REFUSED_SCENARIO, tmp_path)
            kamailio_log = kamailio.log()
    finally:
        transport_1.close()
        transport_2.close()

    assert run.returncode == 0, run.explain() + kamailio_log[-3000:]
    assert re.search(r"503, Retry-After: \d+", run.logs), run.logs
    # Both were tried, and each got the ACK for its refusal from Kamailio.
    for stand_in in (full_1, full_2):
        assert stand_in.invited(run.call_id_prefix), stand_in.requests
        assert ("ACK", next(iter(stand_in.invited(run.call_id_prefix)))) in stand_in.requests
