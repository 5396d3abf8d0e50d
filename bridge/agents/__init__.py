"""The agents file (``BRIDGE_AGENTS``, CONTRACT.md): who answers which number, and with what.

Pure: no asyncio, no sockets, no clock; the only I/O is ``load_agents`` reading the file it
is given. Reloading on change or SIGHUP lives in ``bridge.adapters.agents_watch``.

Using it
--------
At start-up::

    agents = (
        load_agents(settings.agents_path, settings)  # ConfigurationError: refuse to start
        if settings.agents_path is not None
        else default_agents(settings)
    )

For each call, once, when it starts (Twilio ``To``, the SIP To user, or an outbound
request's ``agent`` name)::

    agent = agents.for_number(to)            # the listed agent, else "default"
    agent = agents.get(name)                 # None: no such agent (answer 4xx)

The call keeps that ``Agent`` to its end; a reload hands out a new ``Agents`` (through the
watcher's ``on_change``) that only calls starting later see. Everything on an ``Agent`` is
ready to use: ``instructions``, ``voice``, ``greeting`` and ``provider`` already fall back to
the settings (``instructions`` and ``provider`` are never ``None`` after loading).

Tools of an agent::

    agent.builtin_tools        # subset of ("end_call", "transfer_call")
    agents.tools_for(agent)    # {name: HttpTool}: POST url, sign with tool.secret if set
    agents.mcp_for(agent)      # {name: McpServer}: url, headers
    agent.transfer_targets     # {name: "+1555…" or "sip:…"}: transfer_call's choices

``HttpTool.secret`` is already the tool's own secret or ``BRIDGE_TOOL_SECRET``.
``agent.max_duration_s`` / ``agent.silence_timeout_s`` are ``None`` when not limited.

Every error is a ``ConfigurationError`` naming the file, the entry and the field, e.g.
``agents.toml: agents.front-desk.numbers[0]: '5551234' is not an E.164 number (+ and 7-15
digits)``; several problems are joined by ``; `` on one line. Secret values never appear.
"""

from __future__ import annotations

from bridge.agents.models import (
    BUILTIN_TOOLS,
    DEFAULT_AGENT,
    END_CALL,
    MCP_PREFIX,
    TRANSFER_CALL,
    Agent,
    AgentsConfig,
    HttpTool,
    McpServer,
)
from bridge.agents.registry import Agents, default_agents, load_agents, parse_agents, resolve

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_AGENT",
    "END_CALL",
    "MCP_PREFIX",
    "TRANSFER_CALL",
    "Agent",
    "Agents",
    "AgentsConfig",
    "HttpTool",
    "McpServer",
    "default_agents",
    "load_agents",
    "parse_agents",
    "resolve",
]
