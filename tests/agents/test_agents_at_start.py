"""`bridge serve` with a bad agents file does not start, and says what is wrong and where."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.devtools.ports import free_port


def test_a_bad_agents_file_stops_the_bridge_at_start_with_a_clear_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[agents.front-desk]\nnumbers = ["+15557650000"]\ntools = ["end_call", "book_table"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "TWILIO_"))}
    env |= {"BRIDGE_AGENTS": str(path), "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/c.db"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert str(path) in done.stderr
    assert "agents.front-desk.tools" in done.stderr and "book_table" in done.stderr
    assert "Traceback" not in done.stderr
