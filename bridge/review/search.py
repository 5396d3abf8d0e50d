"""The call list's search form: query parameters in, a ``CallFilter`` and page links out.

``parse_search(params)`` reads what the form sent (all GET, so a search is a URL one can
share); it never raises on bad input but collects messages in ``Search.errors`` so the page
can show the form again with what was typed. Dates are whole UTC days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from bridge.call.records import CallStatus
from bridge.storage.base import CallFilter

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_FIELD_LENGTH = 200

# The form's own fields, in the order they appear in a URL.
FIELDS = ("number", "text", "date_from", "date_to", "status")


@dataclass(frozen=True, slots=True)
class Search:
    """What the form asked for: ``values`` as typed (to fill the form again), the parsed
    filter, the page size and position, and any messages for the person."""

    values: dict[str, str]
    filters: CallFilter = field(default_factory=CallFilter)
    limit: int = DEFAULT_PAGE_SIZE
    before: datetime | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def filtering(self) -> bool:
        """Whether any filter is set (an empty one lists every call)."""
        return self.filters != CallFilter()

    def query(self, *, before: datetime | None = None) -> str:
        """The query string for this search at ``before`` (``""`` for the newest page)."""
        pairs = [(name, self.values[name]) for name in FIELDS if self.values.get(name)]
        if self.limit != DEFAULT_PAGE_SIZE:
            pairs.append(("limit", str(self.limit)))
        if before is not None:
            # Full precision: the store pages with "strictly before", so a rounded-down time
            # would show the last row of this page again.
            pairs.append(("before", before.astimezone(UTC).isoformat()))
        return urlencode(pairs)


def parse_search(params: Mapping[str, str]) -> Search:
    """Read the list page's query parameters; unknown ones are ignored."""
    values = {name: params.get(name, "").strip() for name in FIELDS}
    errors: list[str] = []
    for name in FIELDS:
        if len(values[name]) > MAX_FIELD_LENGTH:
            errors.append(f"The {_TITLES[name]} is too long (at most {MAX_FIELD_LENGTH}).")
            values[name] = values[name][:MAX_FIELD_LENGTH]

    day_from = _parse_day(values["date_from"], "From date", errors)
    day_to = _parse_day(values["date_to"], "To date", errors)
    if day_from is not None and day_to is not None and day_from > day_to:
        errors.append("The From date is after the To date.")

    status: CallStatus | None = None
    if values["status"]:
        try:
            status = CallStatus(values["status"])
        except ValueError:
            errors.append("Pick a status from the list.")

    limit = _parse_limit(params.get("limit"), errors)
    before = _parse_before(params.get("before"), errors)

    filters = CallFilter(
        number=values["number"] or None,
        text=values["text"] or None,
        started_from=None if day_from is None else _midnight(day_from),
        # The To date is inclusive for people; the filter's end is exclusive.
        started_until=None if day_to is None else _midnight(day_to + timedelta(days=1)),
        status=status,
    )
    return Search(values=values, filters=filters, limit=limit, before=before, errors=errors)


_TITLES = {
    "number": "number",
    "text": "transcript text",
    "date_from": "From date",
    "date_to": "To date",
    "status": "status",
}


def _parse_day(raw: str, title: str, errors: list[str]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors.append(f"The {title} {raw!r} is not a date; write it as YYYY-MM-DD.")
        return None


def _parse_limit(raw: str | None, errors: list[str]) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_PAGE_SIZE
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors.append(f"The page size must be a whole number from 1 to {MAX_PAGE_SIZE}.")
        return DEFAULT_PAGE_SIZE
    return limit


def _parse_before(raw: str | None, errors: list[str]) -> datetime | None:
    if raw is None or not raw.strip():
        return None
    try:
        before = datetime.fromisoformat(raw.strip())
    except ValueError:
        errors.append("That page link is broken; start again from the newest calls.")
        return None
    if before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    return before


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
