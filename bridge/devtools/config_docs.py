"""docs/configuration.md, written from the settings model so the two never disagree.

    python -m bridge.devtools.config_docs            # rewrite docs/configuration.md
    python -m bridge.devtools.config_docs --check    # exit 1 when the file is stale

Every field of :class:`bridge.settings.Settings` becomes a row: its environment variable(s)
from the field's ``validation_alias``, its default as an operator would write it, and its
``description``. ``SECTIONS`` groups the rows; a field no section names lands in "Other
settings" rather than being left out. ``PUBLIC`` names the variables of the bridge's public
contract; the rest are the project's own. ``ELSEWHERE`` lists what an operator may set that
is read outside the settings model.

Importing this module reads nothing and writes nothing; only :func:`main` touches the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from bridge.settings import Settings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
COMMAND = "python -m bridge.devtools.config_docs"


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    fields: tuple[str, ...]


SECTIONS: tuple[Section, ...] = (
    Section(
        "Twilio",
        "How Twilio reaches the bridge and how its requests are checked.",
        (
            "public_url",
            "twilio_account_sid",
            "twilio_auth_token",
            "twilio_api_base",
            "stream_secret",
        ),
    ),
    Section(
        "Realtime provider",
        "Which speech-to-speech model answers, and the one to move to when it fails.",
        (
            "provider",
            "realtime_url",
            "realtime_model",
            "openai_api_key",
            "inworld_api_key",
            "xai_api_key",
            "azure_openai_api_key",
            "azure_openai_endpoint",
            "fallback_provider",
            "fallback_realtime_url",
            "fallback_realtime_model",
        ),
    ),
    Section(
        "Audio and agent",
        "What the caller hears and what the agent may do. `BRIDGE_AGENTS` gives different "
        "numbers different agents; the other settings here make the `default` agent.",
        ("audio_format", "instructions", "voice", "greeting", "agents_path", "tool_secret"),
    ),
    Section(
        "Store and call log",
        "Where transcripts and recordings are kept, and who may read them.",
        ("database_url", "review_token", "recordings", "recordings_dir", "lease_s"),
    ),
    Section(
        "SIP",
        "The bridge's own SIP listener, for a PBX, an SBC or a SIP trunk calling it directly.",
        (
            "sip_listen",
            "sip_advertise",
            "rtp_ports",
            "sip_allow",
            "sip_username",
            "sip_password",
            "sip_max_calls",
        ),
    ),
    Section(
        "Outbound calls",
        "Placing calls through Twilio with `POST /api/calls` or `bridge call`. They also need "
        "`TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`.",
        ("api_token", "outbound_from"),
    ),
    Section(
        "OpenAI SIP connector",
        "Calls that a trunk sends to OpenAI directly: the bridge picks the agent, runs its "
        "tools and keeps the transcript without carrying the audio. It also needs "
        "`OPENAI_API_KEY`.",
        ("openai_webhook_secret", "openai_api_base", "openai_sip_max_calls"),
    ),
    Section(
        "Operations and limits",
        "Logging, timeouts, connection limits and shutdown.",
        (
            "log_format",
            "log_level",
            "idle_timeout_s",
            "header_timeout_s",
            "max_connections",
            "drain_s",
        ),
    ),
)

# The variables of the bridge's public contract: their names and meanings stay put.
PUBLIC: frozenset[str] = frozenset(
    {
        "BRIDGE_PUBLIC_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "BRIDGE_PROVIDER",
        "BRIDGE_REALTIME_URL",
        "BRIDGE_REALTIME_MODEL",
        "OPENAI_API_KEY",
        "INWORLD_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "BRIDGE_AUDIO_FORMAT",
        "BRIDGE_INSTRUCTIONS",
        "BRIDGE_VOICE",
        "BRIDGE_GREETING",
        "BRIDGE_DATABASE_URL",
        "BRIDGE_REVIEW_TOKEN",
        "BRIDGE_LOG_FORMAT",
        "BRIDGE_SIP_LISTEN",
        "BRIDGE_SIP_ADVERTISE",
        "BRIDGE_RTP_PORTS",
        "BRIDGE_SIP_ALLOW",
        "BRIDGE_SIP_USERNAME",
        "BRIDGE_SIP_PASSWORD",
        "BRIDGE_SIP_MAX_CALLS",
        "BRIDGE_AGENTS",
        "BRIDGE_API_TOKEN",
        "TWILIO_API_BASE",
        "XAI_API_KEY",
        "BRIDGE_FALLBACK_PROVIDER",
        "BRIDGE_FALLBACK_REALTIME_URL",
        "BRIDGE_FALLBACK_REALTIME_MODEL",
        "BRIDGE_TOOL_SECRET",
        "BRIDGE_OUTBOUND_FROM",
        "OPENAI_WEBHOOK_SECRET",
        "OPENAI_API_BASE",
        "BRIDGE_DRAIN_S",
    }
)

# Read outside the settings model, and meant to be set by an operator: (name, default, meaning).
ELSEWHERE: tuple[tuple[str, str, str], ...] = (
    (
        "PORT",
        "`8000`",
        "The port `bridge serve` listens on when `--port` is not given (platforms that assign "
        "a port, and the `Procfile`, set it).",
    ),
    (
        "FORWARDED_ALLOW_IPS",
        "`127.0.0.1,::1`",
        "Read by the HTTP server (uvicorn): the proxies whose `X-Forwarded-For` and "
        "`X-Forwarded-Proto` are believed. The client address they give decides loopback "
        "access to the call log and the sign-in throttle, so list only your reverse proxy's "
        "addresses; never `*` while `BRIDGE_REVIEW_TOKEN` is unset, or anyone can claim to be "
        "loopback.",
    ),
)

_HEADER = f"""\
<!-- Written by `{COMMAND}` from bridge/settings.py: edit the settings'
     descriptions there and run it again, never this file by hand. -->

# Configuration

The bridge reads its settings once, when it starts, from the environment and from a `.env`
file in its working directory (a variable set in the environment wins over the same one in
`.env`). Names are matched regardless of case. A value the bridge cannot use stops it at
start-up with `bridge: bad configuration: …` and exit status 2, naming the setting. To change
a setting, restart the bridge (see [draining](operations.md#draining-and-rolling-deploys));
only the agents file (`BRIDGE_AGENTS`) is read again while it runs.

- **unset** means the variable is absent; the meaning says what the bridge does then.
- Booleans are written `true`/`false` (or `1`/`0`, `yes`/`no`, `on`/`off`). Durations are in
  seconds and may have decimals.
- Secrets (tokens, keys, passwords) are never logged. Keep them in the environment, a `.env`
  file readable only by the bridge's user, or a Kubernetes Secret.
- **public** settings belong to the bridge's public contract: their names and meanings stay
  as they are. **own** settings are the project's own tuning: documented here, but they may
  change between versions.
"""


def env_names(field: FieldInfo) -> list[str]:
    """The environment variables that set ``field``, in the order they are tried."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return []  # an AliasPath (a nested value) or no alias: no variable of its own


def format_default(field: FieldInfo) -> str:
    """The default as an operator would write it; ``unset`` for secrets and ``None``."""
    value = field.default
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Enum):
        text = str(value.value)
    elif isinstance(value, float):
        text = _number(value)
    else:
        text = str(value)
    return f"`{text}`" if text else '`""`'


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(field: FieldInfo) -> str:
    """``at least 1``, ``more than 0``: the numeric limits the model enforces."""
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    parts = []
    for item in field.metadata:
        for attr, word in words.items():
            limit = getattr(item, attr, None)
            if isinstance(limit, int | float):
                parts.append(f"{word} {_number(limit)}")
    return f" Must be {' and '.join(parts)}." if parts else ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _row(name: str, field: FieldInfo) -> str:
    names = env_names(field) or [name]
    variables = ", ".join(f"`{n}`" for n in names)
    scope = "public" if any(n in PUBLIC for n in names) else "own"
    meaning = _cell((field.description or "").strip() + _bounds(field))
    return f"| {variables} | {format_default(field)} | {scope} | {meaning} |"


def sections() -> list[Section]:
    """``SECTIONS`` as documented, plus "Other settings" for fields no section names."""
    named = {name for section in SECTIONS for name in section.fields}
    rest = tuple(name for name in Settings.model_fields if name not in named)
    out = [
        Section(s.title, s.intro, tuple(n for n in s.fields if n in Settings.model_fields))
        for s in SECTIONS
    ]
    if rest:
        out.append(Section("Other settings", "", rest))
    return out


def render() -> str:
    """The whole of docs/configuration.md as it should be now."""
    fields = Settings.model_fields
    out = [_HEADER]
    for section in sections():
        out.append(f"\n## {section.title}\n\n")
        if section.intro:
            out.append(f"{section.intro}\n\n")
        out.append("| variable | default | scope | meaning |\n| --- | --- | --- | --- |\n")
        out.extend(_row(name, fields[name]) + "\n" for name in section.fields)
    out.append(
        "\n## Read elsewhere\n\n"
        "Not settings of the bridge itself, but read by the `bridge` command.\n\n"
        "| variable | default | meaning |\n| --- | --- | --- |\n"
    )
    out.extend(f"| `{name}` | {default} | {_cell(text)} |\n" for name, default, text in ELSEWHERE)
    return "".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write docs/configuration.md from bridge/settings.py."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file differs from what it would be"
    )
    parser.add_argument("--output", type=Path, default=DOC_PATH, help=f"default: {DOC_PATH}")
    args = parser.parse_args(argv)
    wanted = render()
    path: Path = args.output
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if args.check:
        if current != wanted:
            print(f"{path} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
