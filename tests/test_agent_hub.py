"""The agent hub: the right agent for a call, its session's tools and limits, and reloads
that reach new calls only."""

from __future__ import annotations

from pathlib import Path

from bridge.agent_hub import AgentHub
from bridge.agents.registry import parse_agents
from bridge.devtools.ports import free_port
from bridge.protocols.dialects import SessionConfig
from bridge.settings import load_settings

AGENTS = """
[agents.front-desk]
numbers = ["+15557650000"]
instructions = "Front desk."
voice = "cedar"
greeting = "Bella Cucina, hello!"
tools = ["check_availability", "end_call", "transfer_call", "mcp:calendar"]
transfer_targets = { reception = "+15550001111" }
max_duration_s = 600
silence_timeout_s = 15
transcription_language = "pt-BR"
transcription_model = "gpt-4o-transcribe"

[agents.default]
instructions = "Messages only."

[tools.check_availability]
description = "Free tables."
url = "http://127.0.0.1:9/availability"

[mcp.calendar]
url = "http://127.0.0.1:{port}/mcp"
"""
BASE = SessionConfig("Base.", "marin", "pcmu")


def hub() -> AgentHub:
    settings = load_settings()
    text = AGENTS.replace("{port}", str(free_port()))  # nothing listens: the server is down
    return AgentHub(parse_agents(text, settings, source=Path("agents.toml")), BASE)


async def test_a_call_gets_its_numbers_agent_with_tools_targets_and_limits() -> None:
    h = hub()
    agent = h.pick("+1 555 765 0000")
    assert agent.name == "front-desk"
    call = await h.prepare(agent, "CA" + "0" * 32)
    assert (call.session.instructions, call.session.voice) == ("Front desk.", "cedar")
    assert call.greeting == "Bella Cucina, hello!"
    names = [tool["name"] for tool in call.session.tools]
    # Built-ins and the HTTP tool; the unreachable MCP server is left out, not fatal.
    assert names == ["end_call", "transfer_call", "check_availability"]
    assert call.policy.end_call and call.policy.transfer_targets == ("reception",)
    assert call.policy.external == frozenset({"check_availability"})
    assert call.transfer_targets == {"reception": "+15550001111"}
    assert (call.max_duration_s, call.silence_timeout_s) == (600, 15)
    assert call.session.transcription_language == "pt-BR"
    assert call.session.transcription_model == "gpt-4o-transcribe"


async def test_other_numbers_get_the_default_agent_and_an_outbound_call_its_named_one() -> None:
    h = hub()
    assert h.pick("+15550000000").name == "default"
    assert h.pick("+15550000000", "front-desk").name == "front-desk"
    assert h.pick("+15550000000", "no-such-agent").name == "default"
    call = await h.prepare(h.pick("+15550000000"), "CA" + "1" * 32)
    assert call.session.tools == () and not call.policy.end_call


async def test_a_reload_reaches_new_calls_only() -> None:
    h = hub()
    before = h.pick("+15557650000")
    settings = load_settings()
    text = AGENTS.replace("{port}", "9").replace("Front desk.", "Night desk.")
    h.update(parse_agents(text, settings, source="x"))
    assert before.instructions == "Front desk."  # the live call's agent is unchanged
    assert h.pick("+15557650000").instructions == "Night desk."
