"""Tool calls, as the call sees them: which tools the agent offers, what the model asked,
what is still being worked on, and when the model may speak again. Pure: no I/O, no clock.

The model calls a tool inside a response; the bridge answers every call of that response
with a ``function_call_output`` and only then asks for the next response, so the model
speaks once, with all the results. Tools the bridge runs itself (``end_call``,
``transfer_call``) are decided here; HTTP and MCP tools are run by the session, which hands
the result back. A call for a tool the agent does not offer, or with arguments that are not
a JSON object, is answered at once with an error the model can talk about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "END_CALL",
    "TRANSFER_CALL",
    "Answer",
    "ToolCallReady",
    "ToolDesk",
    "ToolPolicy",
    "Transfer",
    "builtin_tools",
]

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """What one call's agent offers. ``external``: names of HTTP and MCP tools the session
    can run; ``transfer_targets``: the names the model may transfer to (never a number)."""

    end_call: bool = False
    transfer_targets: tuple[str, ...] = ()
    external: frozenset[str] = field(default_factory=frozenset)


def builtin_tools(policy: ToolPolicy) -> list[dict[str, Any]]:
    """The function tools for the built-ins the policy offers, as the session declares them."""
    tools: list[dict[str, Any]] = []
    if policy.end_call:
        tools.append(
            {
                "type": "function",
                "name": END_CALL,
                "description": (
                    "Hang up. Call it only after you have said goodbye and the caller has "
                    "nothing more to ask; the call ends once your goodbye has been heard."
                ),
                "parameters": {"type": "object", "properties": {}},
            }
        )
    if policy.transfer_targets:
        tools.append(
            {
                "type": "function",
                "name": TRANSFER_CALL,
                "description": (
                    "Hand the caller to a person. Tell the caller first; the transfer happens "
                    "once that has been heard."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "target": {"type": "string", "enum": list(policy.transfer_targets)}
                    },
                    "required": ["target"],
                },
            }
        )
    return tools


@dataclass(frozen=True, slots=True)
class ToolCallReady:
    """Run HTTP/MCP tool ``name``, then hand its result to ``CallLogic.tool_finished``."""

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the call now with ``output``; ``hang_up``: the model ended the call."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    ok: bool
    output: str
    hang_up: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    """The model asked for a transfer to a known target: do it once the goodbye is heard,
    then answer (an error output if the far end refused it)."""

    call_id: str
    target: str
    arguments: dict[str, Any]


Decision = ToolCallReady | Answer | Transfer


def error_output(message: str) -> str:
    return json.dumps({"error": message})


class ToolDesk:
    """The calls the model made, per response, until each has its answer."""

    def __init__(self, policy: ToolPolicy) -> None:
        self.policy = policy
        self._open: dict[str, set[str]] = {}  # response id -> call ids not answered yet
        self._response_of: dict[str, str] = {}  # call id -> response id
        self._done: set[str] = set()  # responses the server has finished
        self._silent: set[str] = set()  # responses after which the model must not speak

    def requested(
        self, response_id: str | None, call_id: str, name: str, arguments: str
    ) -> Decision:
        """What to do with one call the model made."""
        rid = response_id or ""
        self._open.setdefault(rid, set()).add(call_id)
        self._response_of[call_id] = rid
        try:
            args = json.loads(arguments) if arguments else {}
        except (ValueError, RecursionError):
            args = None
        if not isinstance(args, dict):
            return Answer(call_id, name, {}, False, error_output("arguments are not a JSON object"))
        if name == END_CALL and self.policy.end_call:
            self._silent.add(rid)
            return Answer(call_id, name, args, True, json.dumps({"ok": True}), hang_up=True)
        if name == TRANSFER_CALL and self.policy.transfer_targets:
            target = args.get("target")
            if target in self.policy.transfer_targets:
                self._silent.add(rid)
                return Transfer(call_id, str(target), args)
            choices = ", ".join(self.policy.transfer_targets)
            return Answer(
                call_id,
                name,
                args,
                False,
                error_output(f"unknown transfer target {target!r}; choose one of: {choices}"),
            )
        if name in self.policy.external:
            return ToolCallReady(call_id, name, args)
        return Answer(call_id, name, args, False, error_output(f"there is no tool named {name!r}"))

    def answered(self, call_id: str) -> bool:
        """A call has its output: True when the model should now be asked to speak (every
        call of its response answered, the response finished, and no hang-up in it)."""
        rid = self._response_of.pop(call_id, None)
        if rid is None:
            return False
        waiting = self._open.get(rid)
        if waiting is not None:
            waiting.discard(call_id)
        return self._ready(rid)

    def response_done(self, response_id: str | None) -> bool:
        """The server finished a response: True when its calls were all answered already."""
        rid = response_id or ""
        if rid not in self._open:
            return False
        self._done.add(rid)
        return self._ready(rid)

    def transfer_failed(self, call_id: str) -> None:
        """The far end refused the transfer: the model must hear that and speak again, so
        its response is no longer one after which it stays silent."""
        rid = self._response_of.get(call_id)
        if rid is not None:
            self._silent.discard(rid)

    def _ready(self, rid: str) -> bool:
        if self._open.get(rid) or rid not in self._done:
            return False
        del self._open[rid]
        self._done.discard(rid)
        return rid not in self._silent

    @property
    def pending(self) -> bool:
        return any(self._open.values())
