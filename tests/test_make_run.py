"""The README's first command on this checkout: ``make run`` serves, and installing the
project prints no packaging warnings. Real processes, but nothing here depends on timing, so
these run with the parallel tests rather than the end-to-end ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge.devtools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
# This machine's pip configuration may name package indexes that are not there; those lines
# are pip's own, about the machine, not about the project.
MACHINE_LINES = ("Location 'file:",)


def test_make_run_serves_the_bridge(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_", "XAI_"))
    }
    env["BRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'calls.db'}"
    env.pop("MAKEFLAGS", None)
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        # Its own session: make and the bridge it starts are stopped together, by that id.
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120  # the first run installs the project
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.json() == {"status": "ok"}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    text = log.read_text()
    assert "bridge.ready" in text
    assert "Traceback" not in text


@pytest.mark.timeout(300)
def test_installing_the_project_prints_no_packaging_warning(tmp_path: Path) -> None:
    """What ``make run`` and ``make test`` do first: build and install the project, here
    into a throwaway target, without its dependencies."""
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir"),
            *("--target", str(tmp_path / "site"), "--disable-pip-version-check", str(ROOT)),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert built.returncode == 0, built.stderr
    said = [
        line
        for line in (built.stdout + built.stderr).splitlines()
        if "warn" in line.lower() and not any(m in line for m in MACHINE_LINES)
    ]
    assert said == [], "\n".join(said)
