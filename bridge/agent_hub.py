"""Agents at call time: which agent answers a call, and what that call's model session
offers and may run.

:class:`AgentHub` holds the current agents snapshot (replaced whole on reload, so a live
call keeps the agent it started with), one MCP client per ``[mcp]`` server and the shared
HTTP client for HTTP tools. For each call it builds a :class:`CallAgent`: the session's
instructions, voice and tools, the greeting, the built-in tool policy, the transfer targets
and a runner for the HTTP and MCP tools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from bridge.adapters.http_tools import ToolOutcome, call_http_tool
from bridge.adapters.realtime_target import RealtimeTarget
from bridge.agents.models import Agent, HttpTool
from bridge.agents.registry import Agents
from bridge.call.tools import ToolPolicy, builtin_tools
from bridge.protocols.dialects import SessionConfig
from bridge.settings import Provider

if TYPE_CHECKING:
    from bridge.adapters.mcp_tools import McpToolSource

__all__ = ["AgentHub", "CallAgent", "ToolRunner"]

log = structlog.get_logger("bridge.agents")


class ToolRunner:
    """Runs one call's HTTP and MCP tools by name."""

    def __init__(
        self,
        call_sid: str,
        agent: str,
        http: Mapping[str, HttpTool],
        mcp: Mapping[str, tuple[McpToolSource, float]],
        client: httpx.AsyncClient | None,
    ) -> None:
        self.call_sid = call_sid
        self.agent = agent
        self._http = http
        self._mcp = mcp
        self._client = client

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._http) | frozenset(self._mcp)

    async def run(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        if (tool := self._http.get(name)) is not None and self._client is not None:
            # Loading the agents file gave a tool without a secret BRIDGE_TOOL_SECRET's.
            secret = tool.secret.get_secret_value().encode() if tool.secret else None
            return await call_http_tool(
                self._client,
                url=str(tool.url),
                secret=secret,
                timeout_s=tool.timeout_s,
                call_sid=self.call_sid,
                agent=self.agent,
                tool=name,
                arguments=arguments,
            )
        if (entry := self._mcp.get(name)) is not None:
            source, timeout_s = entry
            result = await source.call_tool(name, arguments, timeout_s)
            return ToolOutcome(result.ok, result.output)
        return ToolOutcome(False, '{"error": "this tool is not available on this call"}')


@dataclass(frozen=True)
class CallAgent:
    """What one call's agent is, resolved when the call starts."""

    name: str
    session: SessionConfig
    greeting: str | None
    policy: ToolPolicy
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    runner: ToolRunner | None = None
    target: RealtimeTarget | None = None
    max_duration_s: float | None = None
    silence_timeout_s: float | None = None


#: How long an MCP tool may take when its server entry says nothing.
MCP_TIMEOUT_S = 10.0


class AgentHub:
    def __init__(
        self,
        agents: Agents,
        base_session: SessionConfig,
        targets: Callable[[Provider], RealtimeTarget] | None = None,
        client: httpx.AsyncClient | None = None,
        default_greeting: str | None = None,
    ) -> None:
        self._base = base_session
        self._targets = targets
        self._client = client
        self._default_greeting = default_greeting
        self._mcp: dict[str, McpToolSource] = {}
        self.agents = agents
        self.update(agents)

    def update(self, agents: Agents) -> None:
        """A new agents snapshot (a reload): new calls use it; live calls keep theirs."""
        self.agents = agents
        # Fresh sources: each server's tool list is fetched again (a reload is how an
        # operator says the tools changed); live calls keep the runners they hold.
        self._mcp = {}
        if agents.mcp:
            # Imported only when an agent has MCP servers: the MCP SDK takes more than half
            # of the bridge's start-up time, and most bridges never use it.
            from bridge.adapters.mcp_tools import McpToolSource

            self._mcp = {
                name: McpToolSource(name, str(server.url), server.headers)
                for name, server in agents.mcp.items()
            }

    def pick(self, dialed: str, name: str | None = None) -> Agent:
        """The agent for a call to ``dialed``; ``name`` (an outbound call's choice) wins
        when it names one."""
        if name and (agent := self.agents.get(name)) is not None:
            return agent
        return self.agents.for_number(dialed)

    async def prepare(self, agent: Agent, call_sid: str) -> CallAgent:
        """Everything the call needs of ``agent``; MCP servers are asked for their tools
        (cached), and one that cannot be reached is left out with a warning."""
        http = {name: tool for name, tool in self.agents.tools.items() if name in agent.tools}
        specs: list[dict[str, Any]] = [
            {
                "type": "function",
                "name": name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            for name, tool in http.items()
        ]
        mcp: dict[str, tuple[McpToolSource, float]] = {}
        for server in agent.mcp_servers:
            source = self._mcp.get(server)
            if source is None:
                continue
            from bridge.adapters.mcp_tools import McpUnavailable

            try:
                listed = await source.list_tools()
            except McpUnavailable as exc:
                log.warning("agents.mcp_unavailable", server=server, error=str(exc))
                continue
            for spec in listed:
                if spec.name in http or spec.name in mcp:
                    log.warning("agents.tool_name_taken", server=server, tool=spec.name)
                    continue
                mcp[spec.name] = (source, MCP_TIMEOUT_S)
                specs.append(
                    {
                        "type": "function",
                        "name": spec.name,
                        "description": spec.description,
                        "parameters": spec.parameters,
                    }
                )
        runner = ToolRunner(call_sid, agent.name, http, mcp, self._client)
        policy = ToolPolicy(
            end_call="end_call" in agent.tools,
            transfer_targets=tuple(agent.transfer_targets)
            if "transfer_call" in agent.tools
            else (),
            external=runner.names,
        )
        session = replace(
            self._base,
            instructions=agent.instructions or self._base.instructions,
            voice=agent.voice or self._base.voice,
            tools=tuple(builtin_tools(policy)) + tuple(specs),
            transcription_model=agent.transcription_model or self._base.transcription_model,
            transcription_language=(
                agent.transcription_language or self._base.transcription_language
            ),
        )
        target = None
        if self._targets is not None and agent.provider is not None:
            target = self._targets(agent.provider)
        return CallAgent(
            name=agent.name,
            session=session,
            greeting=agent.greeting if agent.greeting is not None else self._default_greeting,
            policy=policy,
            transfer_targets={k: str(v) for k, v in agent.transfer_targets.items()},
            runner=runner,
            target=target,
            max_duration_s=agent.max_duration_s,
            silence_timeout_s=agent.silence_timeout_s,
        )
