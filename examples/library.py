"""nvmedia as a library: prepare files for one request, rewrite a conversation, send both, delete the uploads.

python examples/library.py --emulate              # offline: a local emulator of the service
python examples/library.py photo.heic memo.m4a    # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from demo_media import demo_files

import nvmedia

MODEL = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"


def ask(base_url: str, key: str, messages: list[Any], headers: dict[str, str]) -> str:
    """One chat-completions request; the answer's text."""
    body = {"model": MODEL, "messages": messages, "max_tokens": 512}
    reply = httpx.post(
        f"{base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=300
    )
    reply.raise_for_status()
    return str(reply.json()["choices"][0]["message"]["content"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="a picture and a recording (default: generated ones)")
    parser.add_argument("--emulate", action="store_true", help="talk to a local emulator instead of the service")
    args = parser.parse_args()
    with ExitStack() as stack:
        photo, memo = args.files or demo_files(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        if args.emulate:
            from nvmedia.testing import NVCFEmulator

            emu = stack.enter_context(NVCFEmulator())
            base_url, key = emu.base_url + "/v1", "nvapi-local"
            where: dict[str, Any] = {"assets_url": emu.assets_url, "api_key": key}
        else:
            base_url, key, where = "https://integrate.api.nvidia.com/v1", os.environ["NVIDIA_API_KEY"], {}

        # 1. Files -> one ready-to-send message (small ones inline, large ones uploaded).
        with nvmedia.prepare([photo, memo], **where) as prep:
            for item in prep.items:
                print(f"{Path(item.source).name}: {item.delivery} {item.output.mime if item.output else ''}")
            messages = [{"role": "system", "content": "/no_think"}, prep.message("Describe the picture and the sound.")]
            print("answer:", ask(base_url, key, messages, prep.headers))
        # Leaving the block deleted the assets it uploaded.

        # 2. A conversation written by someone else, with paths in parts and tags.
        conversation = [
            {"role": "system", "content": "/no_think"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": str(photo)}},
                ],
            },
            {"role": "assistant", "content": "An orange disc on a grey gradient."},
            {"role": "user", "content": f"And what do you hear here? <audio src='{memo}' />"},
        ]
        with nvmedia.rewrite_messages(conversation, **where) as rw:
            print(f"rewritten: {len(rw.asset_ids)} asset(s) in the header")
            print("answer:", ask(base_url, key, rw.messages, rw.headers))
        if args.emulate:
            print("assets left on the service:", len(emu.assets()))


if __name__ == "__main__":
    main()
