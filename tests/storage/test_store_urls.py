"""Choosing a store from ``BRIDGE_DATABASE_URL``, and what goes wrong clearly."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bridge.errors import ConfigurationError, LocalProtocolError
from bridge.storage import SqlCallStore, StoreUnavailableError, open_store, sqlite_store
from tests.storage.samples import new_call


def test_sqlite_and_postgres_urls() -> None:
    store = open_store("sqlite:///./bridge.db")
    assert isinstance(store, SqlCallStore) and store.description == "sqlite store './bridge.db'"
    store = open_store("sqlite:////var/lib/bridge/calls.db")
    assert isinstance(store, SqlCallStore) and "'/var/lib/bridge/calls.db'" in store.description
    for url in ("postgresql://bridge:pw@db:6543/calls", "postgres://bridge:pw@db:6543/calls"):
        store = open_store(url)
        assert isinstance(store, SqlCallStore)
        # The password never appears in what gets logged.
        assert store.description == "postgresql store db:6543/calls"


async def test_open_store_does_not_open(tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    store = open_store(f"sqlite:///{db}")
    assert not db.exists()
    await store.open()
    await store.close()
    assert db.exists()


@pytest.mark.parametrize(
    "url",
    ["", "bridge.db", "mysql://u@h/db", "sqlite://host/bridge.db", "sqlite:///", "sqlite:",
     "sqlite:///x.db?mode=ro"],
)  # fmt: skip
def test_other_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="BRIDGE_DATABASE_URL"):
        open_store(url)


async def test_unopenable_sqlite_path_is_a_store_error(tmp_path: Path) -> None:
    store = sqlite_store(str(tmp_path))  # a directory where the file should be
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        await store.open()


async def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_store(f"postgresql://bridge:hunter2@127.0.0.1:{port}/calls")
    with pytest.raises(StoreUnavailableError, match="cannot open postgresql store") as caught:
        await store.open()
    assert "hunter2" not in str(caught.value)
    assert await store.ping() is False


async def test_misuse_is_a_local_error() -> None:
    store = sqlite_store(":memory:")
    with pytest.raises(LocalProtocolError, match="open"):
        await store.create_call(new_call())
    await store.open()
    with pytest.raises(LocalProtocolError):
        await store.open()
    with pytest.raises(LocalProtocolError, match="lease"):
        await store.release_lease()
    await store.close()
    await store.close()
    with pytest.raises(LocalProtocolError):
        await store.get_call("CA0001")


def test_serve_refuses_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "TWILIO_"))}
    env["BRIDGE_DATABASE_URL"] = f"postgresql://bridge:hunter2@127.0.0.1:{port}/calls"
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot open the call store" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "hunter2" not in done.stderr + done.stdout
