"""The agents file: the contract's example loads and routes; every mistake is refused with a
message naming the file, the entry and the field; secrets never show."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bridge.agents import (
    DEFAULT_AGENT,
    Agent,
    Agents,
    HttpTool,
    default_agents,
    load_agents,
    parse_agents,
)
from bridge.errors import ConfigurationError
from bridge.settings import Provider, Settings, load_settings

# The example from CONTRACT.md, "Agents and tools", as written there.
CONTRACT_EXAMPLE = """\
[agents.front-desk]                # any name; the agent "default" serves numbers no agent lists
numbers = ["+15557650000"]         # dialed numbers (Twilio `To`, SIP To user) this agent answers
instructions = "You are the front desk of …"
voice = "marin"
greeting = "Thanks for calling, how can I help?"
provider = "openai"                # optional: overrides BRIDGE_PROVIDER for this agent
tools = ["end_call", "transfer_call", "check_availability"]
transfer_targets = { reception = "+15550001111", support = "sip:support@pbx.example.com" }
max_duration_s = 1800              # optional: say goodbye and end the call after this long

[tools.check_availability]         # an HTTP tool
description = "Free tables for a date and party size."
parameters = { type = "object", properties = { date = { type = "string" }, people = { type = "integer" } }, required = ["date"] }
url = "https://example.com/hooks/availability"
timeout_s = 5
secret = "…"                       # optional: HMAC key for X-Bridge-Signature (else BRIDGE_TOOL_SECRET)

[mcp.calendar]                     # an MCP server (streamable HTTP); an agent offers its tools with "mcp:calendar"
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer …" }
"""

TOOL_SECRET = "tool-secret-0123456789"
HEADER_SECRET = "header-secret-9876543210"
ENV_SECRET = "env-secret-5555555555"


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        provider=Provider.LOCAL,
        instructions="Settings instructions.",
        voice="alloy",
        greeting="Hello from the settings.",
        tool_secret=None,
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_contract_example_loads_and_routes_by_dialed_number(
    tmp_path: Path, settings: Settings
) -> None:
    agents = load_agents(_write(tmp_path, CONTRACT_EXAMPLE), settings)
    front = agents.for_number("+15557650000")
    assert front.name == "front-desk"
    assert front.instructions == "You are the front desk of …"
    assert (front.voice, front.provider, front.max_duration_s) == ("marin", Provider.OPENAI, 1800)
    assert front.builtin_tools == ("end_call", "transfer_call")
    assert front.http_tools == ("check_availability",)
    assert front.transfer_targets == {
        "reception": "+15550001111",
        "support": "sip:support@pbx.example.com",
    }
    assert agents.for_number("+1 555 765 0000") is front  # spaces are not part of a number
    assert set(agents.tools_for(front)) == {"check_availability"}
    assert agents.tools["check_availability"].parameters["required"] == ["date"]
    assert agents.mcp["calendar"].url == "https://mcp.example.com/mcp"

    # No [agents.default] in the file: everything else reaches the settings' agent.
    other = agents.for_number("+15551112222")
    assert other.name == DEFAULT_AGENT and other is agents.default
    assert other.instructions == "Settings instructions."
    assert (other.voice, other.greeting, other.provider) == (
        "alloy",
        "Hello from the settings.",
        Provider.LOCAL,
    )
    assert other.tools == () and other.max_duration_s is None
    assert agents.names == ("front-desk", "default") and len(agents) == 2
    assert agents.get("front-desk") is front and agents.get("nobody") is None
    assert agents.source == tmp_path / "agents.toml"


def test_the_files_own_default_agent_answers_unlisted_numbers(
    tmp_path: Path, settings: Settings
) -> None:
    text = CONTRACT_EXAMPLE + '\n[agents.default]\ninstructions = "Catch-all."\n'
    agents = load_agents(_write(tmp_path, text), settings)
    fallback = agents.for_number("+4930123456")
    assert fallback.name == "default" and fallback.instructions == "Catch-all."
    # Fields the file leaves out come from the settings, so a call can use them directly.
    assert (fallback.voice, fallback.greeting) == ("alloy", "Hello from the settings.")
    assert fallback.provider is Provider.LOCAL
    assert agents.for_number("+15557650000").name == "front-desk"


def test_without_a_file_one_default_agent_comes_from_the_settings(settings: Settings) -> None:
    agents = default_agents(settings)
    assert agents.names == ("default",) and agents.source is None
    agent = agents.for_number("+15557650000")
    assert agent.name == "default" and agent.instructions == "Settings instructions."
    assert agent.voice == "alloy" and agent.greeting == "Hello from the settings."
    assert agent.tools == () and not agents.tools and not agents.mcp


def test_an_unset_provider_falls_back_to_the_effective_one(tmp_path: Path) -> None:
    settings = load_settings(provider=None, openai_api_key=SecretStr("sk-test"))
    agents = load_agents(_write(tmp_path, "[agents.a]\n"), settings)
    assert agents.get("a").provider is Provider.OPENAI  # type: ignore[union-attr]


def test_a_tool_without_its_own_secret_signs_with_bridge_tool_secret(tmp_path: Path) -> None:
    text = (
        '[tools.own]\ndescription = "d"\nurl = "https://a.example"\nsecret = "own-secret"\n'
        '[tools.shared]\ndescription = "d"\nurl = "https://b.example"\n'
    )
    settings = load_settings(provider=Provider.LOCAL, tool_secret=SecretStr(ENV_SECRET))
    tools = load_agents(_write(tmp_path, text), settings).tools
    assert tools["own"].secret is not None
    assert tools["own"].secret.get_secret_value() == "own-secret"
    assert tools["shared"].secret is not None
    assert tools["shared"].secret.get_secret_value() == ENV_SECRET


def test_the_settings_read_bridge_agents_and_bridge_tool_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRIDGE_AGENTS", str(tmp_path / "agents.toml"))
    monkeypatch.setenv("BRIDGE_TOOL_SECRET", ENV_SECRET)
    settings = load_settings()
    assert settings.agents_path == tmp_path / "agents.toml"
    assert settings.tool_secret is not None
    assert settings.tool_secret.get_secret_value() == ENV_SECRET
    assert ENV_SECRET not in repr(settings)


_TOOL = '[tools.check]\ndescription = "d"\nurl = "https://example.com/check"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[agents.front-desk]\nnumbers = ["5551234"]\n',
            "agents.front-desk.numbers[0]: '5551234' is not an E.164 number (+ and 7-15 digits)",
            id="bad-number",
        ),
        pytest.param(
            '[agents.front-desk]\ntranscription_language = "German"\n',
            "agents.front-desk.transcription_language",
            id="bad-language",
        ),
        pytest.param(
            '[agents.front-desk]\nnumbers = ["+1555765000012345678"]\n',
            "agents.front-desk.numbers[0]: '+1555765000012345678' is not an E.164 number",
            id="number-too-long",
        ),
        pytest.param(
            '[agents.front-desk]\ntools = ["end_call", "chek"]\n' + _TOOL,
            "agents.front-desk.tools[1]: unknown tool 'chek'",
            id="unknown-tool",
        ),
        pytest.param(
            '[agents.front-desk]\ntools = ["mcp:calender"]\n[mcp.calendar]\nurl = "https://m.example"\n',
            "agents.front-desk.tools[0]: 'mcp:calender' names no [mcp] server; did you mean 'mcp:calendar'?",
            id="mcp-unknown",
        ),
        pytest.param(
            '[agents.front-desk]\ntools = ["transfer_call"]\n',
            "agents.front-desk.transfer_targets: 'transfer_call' is listed in tools",
            id="transfer-without-targets",
        ),
        pytest.param(
            '[agents.a]\nnumbers = ["+15557650000"]\n[agents.b]\nnumbers = ["+1 555 765 0000"]\n',
            "agents.b.numbers[0]: '+15557650000' is already answered by agent 'a'",
            id="duplicate-number",
        ),
        pytest.param(
            '[agents.front-desk]\ninstructons = "Hi"\n',
            "agents.front-desk.instructons: unknown field; did you mean 'instructions'?",
            id="typo-agent-field",
        ),
        pytest.param(
            _TOOL + "timout_s = 3\n",
            "tools.check.timout_s: unknown field; did you mean 'timeout_s'?",
            id="typo-tool-field",
        ),
        pytest.param(
            '[agent.front-desk]\nvoice = "marin"\n',
            "agent: unknown field; did you mean 'agents'?",
            id="typo-table",
        ),
        pytest.param(
            '[tools.check]\ndescription = "d"\nurl = "ftp://example.com/check"\n',
            "tools.check.url: must be an http:// or https:// URL",
            id="bad-tool-url",
        ),
        pytest.param(
            '[mcp.calendar]\nurl = "mcp.example.com"\n',
            "mcp.calendar.url: must be an http:// or https:// URL",
            id="bad-mcp-url",
        ),
        pytest.param(
            _TOOL + "timeout_s = 60\n",
            "tools.check.timeout_s: input should be less than or equal to 30 (got 60)",
            id="timeout-too-long",
        ),
        pytest.param(
            _TOOL + "timeout_s = 0\n",
            "tools.check.timeout_s: input should be greater than 0 (got 0)",
            id="timeout-zero",
        ),
        pytest.param(
            '[agents.front-desk]\nvoice = "marin"\ngreeting = "Hi\n',
            "invalid TOML: ",
            id="toml-syntax",
        ),
        pytest.param(
            '[agents.front-desk]\ntransfer_targets = { desk = "1234" }\n',
            "agents.front-desk.transfer_targets.desk: '1234' is neither an E.164 number",
            id="bad-transfer-target",
        ),
        pytest.param(
            '[agents.front-desk]\nprovider = "acme"\n',
            "agents.front-desk.provider: input should be 'openai'",
            id="unknown-provider",
        ),
        pytest.param(
            "[agents.front-desk]\nmax_duration_s = -5\n",
            "agents.front-desk.max_duration_s: input should be greater than 0 (got -5)",
            id="negative-max-duration",
        ),
        pytest.param(
            "[agents.front-desk]\nsilence_timeout_s = 0\n",
            "agents.front-desk.silence_timeout_s: input should be greater than 0 (got 0)",
            id="zero-silence-timeout",
        ),
        pytest.param(
            '[tools.check]\nurl = "https://example.com/check"\n',
            "tools.check.description: required field is missing",
            id="missing-description",
        ),
        pytest.param(
            _TOOL + 'parameters = { type = "string" }\n',
            'tools.check.parameters: must be a JSON schema with type = "object"',
            id="parameters-not-object",
        ),
        pytest.param(
            '[tools.end_call]\ndescription = "d"\nurl = "https://example.com"\n',
            "tools.end_call: 'end_call' is a built-in tool; choose another name",
            id="tool-named-like-a-built-in",
        ),
        pytest.param(
            '[tools."check it"]\ndescription = "d"\nurl = "https://example.com"\n',
            "tools.\"check it\": 'check it' is not a valid tool name",
            id="tool-name-with-a-space",
        ),
        pytest.param(
            "[tools." + "x" * 65 + ']\ndescription = "d"\nurl = "https://example.com"\n',
            "is not a valid tool name",
            id="tool-name-too-long",
        ),
        pytest.param(
            '[agents.front-desk]\ntools = ["end_call", "end_call"]\n',
            "agents.front-desk.tools[1]: 'end_call' is listed twice",
            id="tool-listed-twice",
        ),
        pytest.param(
            '[agents.front-desk]\nname = "reception"\n',
            "agents.front-desk.name: an agent's name is its table key",
            id="name-differs-from-key",
        ),
        pytest.param(
            "[agents]\nfront-desk = 3\n",
            "agents.front-desk: must be a table",
            id="agent-not-a-table",
        ),
    ],
)
def test_every_mistake_names_the_file_the_entry_and_the_field(
    tmp_path: Path, settings: Settings, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_agents(path, settings)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message  # one log line


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path, settings: Settings) -> None:
    path = _write(tmp_path, '[agents.a]\nvoice = "marin"\ngreeting = Hello\n')
    with pytest.raises(ConfigurationError) as caught:
        load_agents(path, settings)
    assert str(caught.value).startswith(f"{path}: invalid TOML: ")
    assert "(at line 3, column " in str(caught.value)


def test_several_problems_are_reported_together(tmp_path: Path, settings: Settings) -> None:
    text = '[agents.a]\nnumbers = ["123"]\nvoise = "x"\n[agents.b]\ntools = ["nope"]\n'
    with pytest.raises(ConfigurationError) as caught:
        load_agents(_write(tmp_path, text), settings)
    message = str(caught.value)
    assert "agents.a.numbers[0]" in message and "agents.a.voise: unknown field" in message


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.toml: cannot read the agents file"):
        load_agents(tmp_path / "missing.toml", settings)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[agents.a]\ninstructions = "caf\xe9"\n')
    with pytest.raises(ConfigurationError, match=r"latin1\.toml: not UTF-8 text"):
        load_agents(path, settings)


def test_an_empty_file_leaves_only_the_settings_default(tmp_path: Path, settings: Settings) -> None:
    agents = load_agents(_write(tmp_path, ""), settings)
    assert agents.names == ("default",)
    assert agents.default.instructions == "Settings instructions."


@pytest.mark.parametrize(
    "text",
    [
        # A problem in the very entry that holds the secret.
        f'[tools.check]\ndescription = "d"\nurl = "https://x.example"\nsecret = "{TOOL_SECRET}"\ntimeout_s = 99\n'
        f'[mcp.cal]\nurl = "nope"\nheaders = {{ Authorization = "Bearer {HEADER_SECRET}", X = 5 }}\n',
        # A secret of the wrong type, an unknown field next to a secret.
        f'[tools.check]\ndescription = "d"\nurl = "https://x.example"\nsecret = {{ value = "{TOOL_SECRET}" }}\n'
        f'[mcp.cal]\nurl = "https://m.example"\nheaders = {{ Authorization = "Bearer {HEADER_SECRET}" }}\ntoken = "{HEADER_SECRET}"\n',
        # A TOML syntax error on the secret's own line.
        f'[tools.check]\ndescription = "d"\nsecret = "{TOOL_SECRET}" "{HEADER_SECRET}"\n',
        # A URL with a token in it, refused.
        f'[tools.check]\ndescription = "d"\nurl = "ftp://u:{TOOL_SECRET}@x.example/?k={HEADER_SECRET}"\n',
    ],
)
def test_secrets_never_appear_in_error_messages(
    tmp_path: Path, settings: Settings, text: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_agents(_write(tmp_path, text), settings)
    shown = "".join(traceback.format_exception(caught.value))  # chained exceptions too
    assert TOOL_SECRET not in shown and HEADER_SECRET not in shown


def test_secrets_never_appear_in_reprs(tmp_path: Path) -> None:
    text = (
        f'[tools.check]\ndescription = "d"\nurl = "https://x.example"\nsecret = "{TOOL_SECRET}"\n'
        f'[mcp.cal]\nurl = "https://m.example"\nheaders = {{ Authorization = "Bearer {HEADER_SECRET}" }}\n'
        '[agents.a]\ntools = ["check", "mcp:cal"]\n'
    )
    settings = load_settings(provider=Provider.LOCAL, tool_secret=SecretStr(ENV_SECRET))
    agents = load_agents(_write(tmp_path, text), settings)
    agent = agents.get("a")
    assert agent is not None
    shown = " ".join(
        [
            repr(agents),
            repr(agents.tools),
            str(agents.tools["check"]),
            repr(agents.mcp),
            str(agents.mcp["cal"]),
            repr(agents.tools_for(agent)),
            repr(agents.mcp_for(agent)),
            repr(agent),
        ]
    )
    for secret in (TOOL_SECRET, HEADER_SECRET, ENV_SECRET):
        assert secret not in shown
    assert "Authorization" in shown  # the header's name is not secret
    # The values are still there for the code that needs them.
    assert agents.mcp["cal"].headers["Authorization"] == f"Bearer {HEADER_SECRET}"
    assert agents.tools["check"].secret is not None
    assert agents.tools["check"].secret.get_secret_value() == TOOL_SECRET


def test_agents_are_immutable(tmp_path: Path, settings: Settings) -> None:
    agents = load_agents(_write(tmp_path, CONTRACT_EXAMPLE), settings)
    agent = agents.for_number("+15557650000")
    with pytest.raises(ValidationError):
        agent.instructions = "changed"
    assert isinstance(agent.tools, tuple) and isinstance(agent.numbers, tuple)
    with pytest.raises(TypeError):
        agents.tools["x"] = agents.tools["check_availability"]  # type: ignore[index]


def test_models_used_directly_refuse_what_the_file_would(settings: Settings) -> None:
    with pytest.raises(ValidationError):
        Agent(name="a", numbers=("555",))
    with pytest.raises(ValidationError):
        HttpTool(description="d", url="https://x.example", timeout_s=31)
    with pytest.raises(ValueError, match="default"):
        Agents({})


def test_parse_agents_needs_no_file(settings: Settings) -> None:
    agents = parse_agents('[agents.a]\nnumbers = ["+15550001111"]\n', settings, source="inline")
    assert agents.for_number("+15550001111").name == "a"
    with pytest.raises(ConfigurationError, match=r"^inline: agents\.a\.voise"):
        parse_agents('[agents.a]\nvoise = "x"\n', settings, source="inline")


def test_the_package_does_no_io_of_its_own() -> None:
    io_modules = {"asyncio", "socket", "starlette", "websockets", "time", "uvicorn", "httpx"}
    package = Path(__file__).resolve().parents[2] / "bridge" / "agents"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in io_modules, f"{path.name} imports {name}"
