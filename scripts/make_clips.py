"""Regenerate the audio clips shipped in bridge/assets/ (developers only).

Needs espeak-ng on PATH (``apt-get install espeak-ng``). Each line is synthesized, turned
into 8 kHz mono mu-law with the bridge's own codecs, trimmed of leading and trailing
silence, and written as raw ``bridge/assets/<name>.ulaw``; ``bridge/assets/clips.json``
maps every name to its text. Run from anywhere:

    .venv/bin/python scripts/make_clips.py

The output depends on the espeak-ng version, so only rerun it when a line changes, and
commit the regenerated files together.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the script may run before the project is installed

from bridge.codecs.pcm import ulaw_rms_dbfs  # noqa: E402
from bridge.codecs.wav import read_wav_as_ulaw8k  # noqa: E402

ASSETS = ROOT / "bridge" / "assets"

AGENT_VOICE = "en-us+f3"  # the agent and the caller get different voices so a listener
CALLER_VOICE = "en-us"  # of a simulated call can tell who is talking
SPEED_WPM = 165

# name -> (voice, text)
LINES: dict[str, tuple[str, str]] = {
    "apology": (
        AGENT_VOICE,
        "Sorry, we can't take your call right now. Please try again in a few minutes. Goodbye.",
    ),
    "demo_greeting": (
        AGENT_VOICE,
        "Hello! You have reached the bridge demo. How can I help you today?",
    ),
    "demo_reply_1": (
        AGENT_VOICE,
        "Sure. Our office is open from nine to five, Monday to Friday.",
    ),
    "demo_reply_2": (
        AGENT_VOICE,
        "You're welcome. Is there anything else I can help you with?",
    ),
    "demo_reply_3": (AGENT_VOICE, "Thanks for calling. Goodbye!"),
    "caller_1": (CALLER_VOICE, "Hi, what are your opening hours?"),
    "caller_2": (CALLER_VOICE, "Great, thank you very much."),
    "caller_3": (CALLER_VOICE, "No, that's all. Bye."),
}

FRAME = 80  # 10 ms at 8 kHz: fine enough to trim without clipping consonants
SILENCE_DBFS = -55.0
LEAD_PAD_FRAMES = 3  # keep 30 ms before the first sound ...
TAIL_PAD_FRAMES = 8  # ... and 80 ms after the last, so word endings fade naturally


def synthesize(text: str, voice: str, workdir: Path) -> bytes:
    """Speak ``text`` with espeak-ng and return it as 8 kHz mono mu-law."""
    wav = workdir / "line.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(wav), text],
        check=True,
    )
    return read_wav_as_ulaw8k(wav)


def trim_silence(ulaw: bytes) -> bytes:
    """Cut leading and trailing 10 ms frames quieter than SILENCE_DBFS, keeping a pad."""
    frames = [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]
    loud = [i for i, frame in enumerate(frames) if ulaw_rms_dbfs(frame) > SILENCE_DBFS]
    if not loud:
        raise SystemExit("espeak-ng produced only silence")
    first = max(loud[0] - LEAD_PAD_FRAMES, 0)
    last = min(loud[-1] + TAIL_PAD_FRAMES, len(frames) - 1)
    return b"".join(frames[first : last + 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="directory to write into")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not found; install it (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, text) in LINES.items():
            clip = trim_silence(synthesize(text, voice, Path(tmp)))
            (out / f"{name}.ulaw").write_bytes(clip)
            texts[name] = text
            print(f"{name}: {len(clip) / 8000:.2f} s, {ulaw_rms_dbfs(clip):.1f} dBFS")
    (out / "clips.json").write_text(json.dumps(texts, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
