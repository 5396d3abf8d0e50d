"""The call log for people: the JSON API, access control, and the text view of the CLI."""

from bridge.review.api import review_api_routes
from bridge.review.auth import review_access_allowed
from bridge.review.text_view import format_call, format_call_list

__all__ = ["format_call", "format_call_list", "review_access_allowed", "review_api_routes"]
