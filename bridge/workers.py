"""``bridge serve --workers N``: N server processes on one port, for more than one core.

Each worker is a forked process with its own event loop, its own app and its own store
connection; the kernel spreads new connections over them (``SO_REUSEPORT``: each worker
listens on a socket of its own bound to the same port, and the kernel hashes connections
across them, so one busy worker does not take every call).

Nothing a call needs may live in one worker only:

- stream tokens are minted by whichever worker answers the voice webhook and checked by
  whichever takes the media stream, so every worker gets the same token key (one is made
  here when neither ``BRIDGE_STREAM_SECRET`` nor ``TWILIO_AUTH_TOKEN`` gives one);
- calls are claimed and leased in the shared store, one lease per worker, as for separate
  instances behind a load balancer;
- metrics are kept in Prometheus' multiprocess mode (a directory of value files the
  workers share), so ``/metrics`` from any worker counts every worker's calls;
- the SIP listener binds its UDP/TCP ports once: only the first worker serves SIP.

The parent only supervises: it forwards SIGTERM and SIGINT to the workers, waits for them,
and exits with the first non-zero status one of them had.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable

from pydantic import SecretStr

from bridge.settings import Settings

__all__ = ["MULTIPROC_ENV", "listen_socket", "serve_workers", "worker_settings"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_settings(settings: Settings, index: int, token_key: str | None) -> Settings:
    """What worker ``index`` runs with: the shared token key, SIP on the first only."""
    update: dict[str, object] = {}
    if token_key is not None:
        update["stream_secret"] = SecretStr(token_key)
    if index > 0:
        update["sip_listen"] = None
    return settings.model_copy(update=update) if update else settings


def shared_token_key(settings: Settings) -> str | None:
    """A token key for all the workers when the settings do not derive one."""
    if settings.stream_secret is None and settings.twilio_auth_token is None:
        return secrets.token_hex(32)
    return None


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other workers may bind as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve_workers(
    workers: int,
    host: str,
    port: int,
    backlog: int,
    run_worker: Callable[[int, socket.socket], None],
) -> int:
    """Fork ``workers`` processes, each running ``run_worker(index, its_socket)``; return
    the exit status for the command. Call before any thread or event loop exists."""
    metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
    # Read by prometheus_client when it is first imported: set before any worker imports it.
    os.environ[MULTIPROC_ENV] = metrics_dir
    # Bound here, before forking, so that a port in use is one clear error, not N.
    sockets = [listen_socket(host, port, backlog) for _ in range(workers)]
    children: dict[int, int] = {}
    try:
        for index, sock in enumerate(sockets):
            pid = os.fork()
            if pid == 0:  # the worker
                for other in sockets:
                    if other is not sock:
                        other.close()
                status = 0
                try:
                    run_worker(index, sock)
                except BaseException:  # a worker must never fall back into the parent's code
                    status = 1
                os._exit(status)
            children[pid] = index
        for sock in sockets:
            sock.close()
        return _supervise(children)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# A worker stopped on purpose exits 0 (bridge.serving); one stopped before its server had
# started dies of the signal itself, which is a clean exit too, not a crash.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _supervise(children: dict[int, int]) -> int:
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        index = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(raw)
        if stopping and -code in _STOP_SIGNALS:
            code = 0
        if code != 0:
            print(f"bridge: worker {index} (pid {pid}) exited with {code}", file=sys.stderr)
            status = status or (code if code > 0 else 1)
            # One worker gone wrong: stop the others rather than serve on half-broken.
            forward(signal.SIGTERM, None)
    return status
