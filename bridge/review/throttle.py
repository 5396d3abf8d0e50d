"""Slows down guessing of the review token at the sign-in form.

Each client address may get the token wrong ``limit`` times within ``window_s``; past that,
every sign-in from it is refused (right token or not) until its oldest failure leaves the
window. Refusing the right token too is the point: otherwise a guesser would only have to
keep going. Memory stays bounded: at most ``max_clients`` addresses are tracked, the least
recently failing forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class SignInThrottle:
    def __init__(self, limit: int = 10, window_s: float = 300.0, max_clients: int = 10_000):
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again; 0 when it may try now."""
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return 0.0
        return max(failures[0] + self.window_s - now, 0.0)

    def failed(self, client: str, now: float) -> None:
        """Count a wrong token from ``client``."""
        failures = self._recent(client, now)
        if failures is None:
            failures = self._failures[client] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        failures.append(now)
        self._failures.move_to_end(client)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures
