"""Loading the agents file into an immutable snapshot, and routing a dialed number to an agent."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from pydantic import ValidationError

from bridge.agents.models import DEFAULT_AGENT, Agent, AgentsConfig, HttpTool, McpServer, explain
from bridge.errors import ConfigurationError
from bridge.settings import Settings


class Agents:
    """One version of the agents file, resolved against the settings. Never changes: a
    reload builds a new ``Agents``, and calls already running keep the ``Agent`` they got.

    There is always an agent named ``default``: the file's own, or one built from
    ``BRIDGE_INSTRUCTIONS``/``VOICE``/``GREETING`` when the file has none.
    """

    __slots__ = ("_agents", "_by_number", "_mcp", "_source", "_tools")

    def __init__(
        self,
        agents: Mapping[str, Agent],
        tools: Mapping[str, HttpTool] | None = None,
        mcp: Mapping[str, McpServer] | None = None,
        *,
        source: Path | None = None,
    ) -> None:
        if DEFAULT_AGENT not in agents:
            raise ValueError(f"an Agents snapshot needs an agent named {DEFAULT_AGENT!r}")
        self._agents = MappingProxyType(dict(agents))
        self._tools = MappingProxyType(dict(tools or {}))
        self._mcp = MappingProxyType(dict(mcp or {}))
        self._source = source
        self._by_number = MappingProxyType(
            {number: agent for agent in agents.values() for number in agent.numbers}
        )

    def for_number(self, dialed: str) -> Agent:
        """The agent answering ``dialed`` (Twilio ``To``, the SIP To user part): the one that
        lists it exactly (spaces ignored), else ``default``."""
        return self._by_number.get("".join(dialed.split()), self.default)

    def get(self, name: str) -> Agent | None:
        """The agent called ``name`` (for outbound calls that name one), or ``None``."""
        return self._agents.get(name)

    @property
    def default(self) -> Agent:
        return self._agents[DEFAULT_AGENT]

    @property
    def names(self) -> tuple[str, ...]:
        """Agent names in file order (``default`` last when it comes from the settings)."""
        return tuple(self._agents)

    @property
    def tools(self) -> Mapping[str, HttpTool]:
        """Every ``[tools]`` entry, by name."""
        return self._tools

    @property
    def mcp(self) -> Mapping[str, McpServer]:
        """Every ``[mcp]`` server, by name."""
        return self._mcp

    @property
    def source(self) -> Path | None:
        """The file this was read from; ``None`` for the settings-only default."""
        return self._source

    def tools_for(self, agent: Agent) -> dict[str, HttpTool]:
        """The HTTP tools ``agent`` offers, by name."""
        return {name: self._tools[name] for name in agent.http_tools}

    def mcp_for(self, agent: Agent) -> dict[str, McpServer]:
        """The MCP servers whose tools ``agent`` offers, by name."""
        return {name: self._mcp[name] for name in agent.mcp_servers}

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return f"Agents(names={list(self._agents)!r}, source={self._source!r})"


def resolve(agent: Agent, settings: Settings) -> Agent:
    """``agent`` with the fields it leaves unset taken from the settings."""
    return agent.model_copy(
        update={
            "instructions": agent.instructions
            if agent.instructions is not None
            else settings.instructions,
            "voice": agent.voice if agent.voice is not None else settings.voice,
            "greeting": agent.greeting if agent.greeting is not None else settings.greeting,
            "provider": agent.provider or settings.effective_provider,
        }
    )


def _settings_default(settings: Settings) -> Agent:
    return resolve(Agent(name=DEFAULT_AGENT), settings)


def default_agents(settings: Settings) -> Agents:
    """The snapshot without an agents file: one agent, ``default``, from the settings."""
    return Agents({DEFAULT_AGENT: _settings_default(settings)})


def load_agents(path: Path | str, settings: Settings) -> Agents:
    """Read and check the agents file at ``path``; ``ConfigurationError`` names the file, the
    entry and the field of every problem found."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{path}: cannot read the agents file ({exc.strerror or exc})"
        ) from exc
    return parse_agents(data, settings, source=path)


def parse_agents(text: str | bytes, settings: Settings, *, source: Path | str) -> Agents:
    """Check the agents file's contents; ``source`` names it in messages. No I/O."""
    if isinstance(text, bytes):
        try:
            # utf-8-sig: a byte-order mark left by an editor is not an error.
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)"; it never quotes values.
        raise ConfigurationError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"{source}: invalid TOML: nested too deeply") from None
    try:
        config = AgentsConfig.model_validate(raw)
    except ValidationError as exc:
        # ``from None``: pydantic's own text shows input values, and those may be secrets.
        raise ConfigurationError(f"{source}: {explain(exc)}") from None
    return _snapshot(config, settings, Path(source))


def _snapshot(config: AgentsConfig, settings: Settings, source: Path) -> Agents:
    agents = {name: resolve(agent, settings) for name, agent in config.agents.items()}
    if DEFAULT_AGENT not in agents:
        agents[DEFAULT_AGENT] = _settings_default(settings)
    tools = {
        name: tool
        if tool.secret is not None or settings.tool_secret is None
        else tool.model_copy(update={"secret": settings.tool_secret})
        for name, tool in config.tools.items()
    }
    return Agents(agents, tools, config.mcp, source=source)
