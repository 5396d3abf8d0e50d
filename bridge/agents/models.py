"""The agents file's shape: agents, HTTP tools and MCP servers, checked field by field.

Every model refuses unknown fields, so a misspelt key is an error at start-up rather than a
setting silently ignored for months. Models are frozen: a live call holds the ``Agent`` it
started with, and a reload builds new objects instead of changing that one.

Problems are reported with their place in the file (``agents.front-desk.numbers[0]``);
``explain`` turns pydantic's errors into such lines. Secret values (a tool's ``secret``, an
MCP server's header values) never appear in a message or a repr.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.settings import Provider

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
# Tools the bridge itself implements; offered to the model only when an agent lists them.
BUILTIN_TOOLS: tuple[str, ...] = (END_CALL, TRANSFER_CALL)
# An agent lists ``mcp:calendar`` to offer every tool of the ``[mcp.calendar]`` server.
MCP_PREFIX = "mcp:"
# The agent that answers every number no other agent lists.
DEFAULT_AGENT = "default"

_E164 = re.compile(r"\+[0-9]{7,15}")
# What realtime APIs accept as a function name.
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MASK = "**********"


def key(name: str) -> str:
    """A table key as it would be written in TOML: bare when it can be, quoted otherwise."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _strip_spaces(value: object) -> object:
    # "+1 555 765 0000" is how people copy numbers; the dialed number arrives without spaces.
    return "".join(value.split()) if isinstance(value, str) else value


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError(f"{value!r} is not an E.164 number (+ and 7-15 digits)")
    return value


def _transfer_target(value: str) -> str:
    if value.startswith("+"):
        value = "".join(value.split())
        if _E164.fullmatch(value):
            return value
    scheme, _, rest = value.partition(":")
    if scheme.lower() in ("sip", "sips") and rest and not any(c.isspace() for c in value):
        return value
    raise ValueError(
        f"{value!r} is neither an E.164 number (+ and 7-15 digits) nor a sip:/sips: URI"
    )


def _http_url(value: str) -> str:
    # The value itself stays out of the message: URLs sometimes carry a token.
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ValueError("must be an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL (without spaces)")
    return value


E164Number = Annotated[str, BeforeValidator(_strip_spaces), AfterValidator(_e164)]
TransferTarget = Annotated[str, AfterValidator(_transfer_target)]
HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


def _empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class HttpTool(BaseModel):
    """``[tools.NAME]``: a function the model may call, run by POSTing to ``url``.

    ``secret`` keys the ``X-Bridge-Signature`` HMAC; after loading it is the tool's own or,
    when the file gives none, ``BRIDGE_TOOL_SECRET`` (``None`` when neither is set).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    parameters: dict[str, Any] = Field(default_factory=_empty_object_schema)
    url: HttpUrlStr
    timeout_s: float = Field(default=5.0, gt=0, le=30)
    secret: SecretStr | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON schema with type = "object"')
        if not isinstance(value.get("properties", {}), dict):
            raise ValueError("properties must be a table")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError("must hold only JSON values (no TOML dates or times)") from None
        return value


class McpServer(BaseModel):
    """``[mcp.NAME]``: an MCP server (streamable HTTP) whose tools an agent offers with
    ``mcp:NAME``. Header values are treated as secrets: hidden in the repr."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrlStr
    headers: dict[str, str] = Field(default_factory=dict)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "url", self.url
        yield "headers", dict.fromkeys(self.headers, _MASK)


class Agent(BaseModel):
    """``[agents.NAME]``: who answers a dialed number, how, and with which tools.

    After ``load_agents``/``default_agents`` the fields the file leaves out are filled from
    the settings: ``instructions`` and ``provider`` are never ``None`` there, ``voice`` and
    ``greeting`` are ``None`` only when the settings have none either.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    numbers: tuple[E164Number, ...] = ()
    instructions: str | None = None
    voice: str | None = None
    greeting: str | None = None
    provider: Provider | None = None
    tools: tuple[str, ...] = ()
    transfer_targets: dict[str, TransferTarget] = Field(default_factory=dict)
    # Say goodbye and end the call after this long.
    max_duration_s: int | None = Field(default=None, gt=0)
    # Caller silent this long: one prompt; silent as long again: the call ends.
    silence_timeout_s: float | None = Field(default=None, gt=0)
    # What transcribes the caller for this agent (the provider's default when unset): the
    # language as a BCP 47 tag ("de", "pt-BR"), and the model (on Azure, its deployment).
    transcription_language: str | None = Field(
        default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
    )
    transcription_model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:/-]{1,100}$")

    @property
    def builtin_tools(self) -> tuple[str, ...]:
        """The built-in tools this agent offers (``end_call``, ``transfer_call``)."""
        return tuple(t for t in self.tools if t in BUILTIN_TOOLS)

    @property
    def http_tools(self) -> tuple[str, ...]:
        """Names of the ``[tools]`` entries this agent offers."""
        return tuple(t for t in self.tools if t not in BUILTIN_TOOLS and not _is_mcp(t))

    @property
    def mcp_servers(self) -> tuple[str, ...]:
        """Names of the ``[mcp]`` servers whose tools this agent offers."""
        return tuple(t.removeprefix(MCP_PREFIX) for t in self.tools if _is_mcp(t))

    def offers(self, tool: str) -> bool:
        """Whether ``tool`` (a built-in, a ``[tools]`` name or ``mcp:NAME``) is listed."""
        return tool in self.tools


def _is_mcp(tool: str) -> bool:
    return tool.startswith(MCP_PREFIX)


class AgentsConfig(BaseModel):
    """The whole file: ``[agents.*]``, ``[tools.*]`` and ``[mcp.*]``, checked together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: dict[str, Agent] = Field(default_factory=dict)
    tools: dict[str, HttpTool] = Field(default_factory=dict)
    mcp: dict[str, McpServer] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_agents(cls, data: Any) -> Any:
        # An agent's name is its table key; the table itself does not repeat it.
        if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
            return data
        named: dict[Any, Any] = {}
        for name, table in data["agents"].items():
            if isinstance(table, dict):
                if "name" in table and table["name"] != name:
                    raise ValueError(
                        f"agents.{key(name)}.name: an agent's name is its table key ({name!r})"
                    )
                table = {**table, "name": name}
            named[name] = table
        return {**data, "agents": named}

    @model_validator(mode="after")
    def _cross_check(self) -> AgentsConfig:
        problems = [*self._tool_name_problems(), *self._agent_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _tool_name_problems(self) -> Iterator[str]:
        for name in self.tools:
            if name in BUILTIN_TOOLS:
                yield f"tools.{key(name)}: {name!r} is a built-in tool; choose another name"
            elif not _TOOL_NAME.fullmatch(name):
                yield (
                    f"tools.{key(name)}: {name!r} is not a valid tool name "
                    "(1-64 letters, digits, _ or -)"
                )
        # Server names share the rule, so "mcp:NAME" reads back unambiguously.
        for name in self.mcp:
            if not _TOOL_NAME.fullmatch(name):
                yield (
                    f"mcp.{key(name)}: {name!r} is not a valid server name "
                    "(1-64 letters, digits, _ or -)"
                )

    def _agent_problems(self) -> Iterator[str]:
        answered_by: dict[str, str] = {}
        for name, agent in self.agents.items():
            where = f"agents.{key(name)}"
            if agent.name != name:
                yield f"{where}.name: {agent.name!r} differs from the table key {name!r}"
            for i, number in enumerate(agent.numbers):
                other = answered_by.setdefault(number, name)
                if other != name:
                    yield f"{where}.numbers[{i}]: {number!r} is already answered by agent {other!r}"
            seen: set[str] = set()
            for i, tool in enumerate(agent.tools):
                if tool in seen:
                    yield f"{where}.tools[{i}]: {tool!r} is listed twice"
                seen.add(tool)
                problem = self._unknown_tool(tool)
                if problem:
                    yield f"{where}.tools[{i}]: {problem}"
            if TRANSFER_CALL in agent.tools and not agent.transfer_targets:
                yield (
                    f"{where}.transfer_targets: {TRANSFER_CALL!r} is listed in tools, "
                    "so at least one transfer target is needed"
                )

    def _unknown_tool(self, tool: str) -> str | None:
        if tool in BUILTIN_TOOLS or tool in self.tools:
            return None
        if _is_mcp(tool):
            server = tool.removeprefix(MCP_PREFIX)
            if server in self.mcp:
                return None
            hint = _did_you_mean(server, self.mcp, prefix=MCP_PREFIX)
            return f"{tool!r} names no [mcp] server{hint}"
        hint = _did_you_mean(tool, [*BUILTIN_TOOLS, *self.tools])
        return (
            f"unknown tool {tool!r}: not a built-in ({', '.join(BUILTIN_TOOLS)}), "
            f"a [tools] entry or mcp:NAME{hint}"
        )


def _did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


# Which model a location belongs to, for naming the fields an unknown one may have meant.
_TABLE_MODELS: dict[str, type[BaseModel]] = {"agents": Agent, "tools": HttpTool, "mcp": McpServer}
# Constraint errors where showing the value helps and cannot leak a secret (numbers only).
_NUMERIC_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def explain(exc: ValidationError) -> str:
    """pydantic's errors as ``place: problem`` lines joined by ``; ``, without input values
    (which may be secrets) except where they are numbers or were quoted on purpose."""
    return "; ".join(_explain_one(error) for error in exc.errors())


def _explain_one(error: Any) -> str:
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind = error["type"]
    if kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "extra_forbidden":
        message = "unknown field" + _field_hint(loc)
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "must be a table"
    elif kind in _NUMERIC_ERRORS and isinstance(error.get("input"), int | float):
        message = f"{_lower_first(error['msg'])} (got {error['input']!r})"
    else:
        message = _lower_first(error["msg"])
    return f"{_place(loc)}: {message}" if loc else message


def _field_hint(loc: tuple[Any, ...]) -> str:
    if len(loc) == 1:
        fields: Iterable[str] = AgentsConfig.model_fields
    elif len(loc) == 3 and loc[0] in _TABLE_MODELS:
        fields = [f for f in _TABLE_MODELS[loc[0]].model_fields if f != "name"]
    else:
        return ""
    return _did_you_mean(str(loc[-1]), fields) or f"; known fields: {', '.join(fields)}"


def _place(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + key(str(part))
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
