"""Every script in examples/ runs offline against the emulator (``--emulate``) and says what it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BOTH = "received 1 image, 1 audio (1 inline, 1 asset)"


def _run(*command: str) -> list[str]:
    """Run an example as a user would, from the repository, with this Python's scripts on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("NVIDIA_API_KEY", None)  # offline: nothing may need a key
    done = subprocess.run(
        list(command), cwd=EXAMPLES.parent, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} - {"demo.py"}
    tested = {"library.py", "openai_sdk.py", "langchain_chat.py", "upload_server.py", "cli_batch.sh"}
    assert scripts == tested


def test_library_example() -> None:
    assert _run(sys.executable, str(EXAMPLES / "library.py"), "--emulate") == [
        "photo.png: inline image/png",
        "memo.wav: asset audio/wav",
        f"answer: {BOTH}",
        "rewritten: 1 asset(s) in the header",
        f"answer: {BOTH}",
        "assets left on the service: 0",
    ]


def test_openai_sdk_example() -> None:
    assert _run(sys.executable, str(EXAMPLES / "openai_sdk.py"), "--emulate") == [
        f"answer: {BOTH}",
        f"streamed: {BOTH}",
        f"async: {BOTH}",
        "assets left on the service: 0",
    ]


def test_langchain_example() -> None:
    assert _run(sys.executable, str(EXAMPLES / "langchain_chat.py"), "--emulate") == [
        f"invoke: {BOTH}",
        f"stream: {BOTH}",
        "chain: received 1 audio (0 inline, 1 asset)",
        "assets left on the service: 0",
    ]


def test_upload_server_example_refuses_paths_outside_its_uploads() -> None:
    lines = _run(sys.executable, str(EXAMPLES / "upload_server.py"), "--emulate")
    assert lines[0].startswith("uploaded photo.png as ") and lines[1].startswith("uploaded memo.wav as ")
    assert lines[2] == f"answer: {BOTH}"
    refusals = [line.split(": ", 1)[1] for line in lines[3:6]]
    outside = "400 unreadable: messages[0].content <img> tag: {} is outside the folder local files are read from"
    assert refusals == [
        outside.format(p) for p in ("../../../../etc/passwd", "/etc/hostname", "../../../../no/such/file")
    ]
    assert lines[6:] == ["assets left on the service: 0"]


def test_cli_batch_example() -> None:
    assert _run("bash", str(EXAMPLES / "cli_batch.sh"), "--emulate") == [
        "memo.wav -> ok received 1 audio (0 inline, 1 asset)",
        "photo.png -> ok received 1 image (1 inline, 0 assets)",
    ]
