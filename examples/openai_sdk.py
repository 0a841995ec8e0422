"""The official openai SDK with nvmedia in its upload step: sync, streamed, and async requests.

python examples/openai_sdk.py --emulate             # offline: a local emulator of the service
python examples/openai_sdk.py photo.heic memo.m4a   # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from demo_media import demo_files
from openai import AsyncOpenAI, OpenAI

import nvmedia

MODEL = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"


def conversation(photo: Path, memo: Path) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "/no_think"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe the picture, then the recording."},
                {"type": "image_url", "image_url": {"url": str(photo)}},
                {"type": "audio_url", "audio_url": {"url": str(memo)}},
            ],
        },
    ]


async def ask_async(base_url: str, key: str, messages: list[dict[str, Any]], where: dict[str, Any]) -> str | None:
    client = AsyncOpenAI(base_url=base_url, api_key=key)
    async with await nvmedia.arewrite_messages(messages, **where) as rw:
        reply = await client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
    await client.close()
    return reply.choices[0].message.content


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
        client = OpenAI(base_url=base_url, api_key=key)
        messages = conversation(photo, memo)

        with nvmedia.rewrite_messages(messages, **where) as rw:  # uploads what is too big to inline
            reply = client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
            print("answer:", reply.choices[0].message.content)
        # leaving the block deleted the assets it uploaded

        with nvmedia.rewrite_messages(messages, **where) as rw:
            stream = client.chat.completions.create(
                model=MODEL, messages=rw.messages, extra_headers=rw.headers, stream=True
            )
            print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))

        print("async:", asyncio.run(ask_async(base_url, key, messages, where)))
        if args.emulate:
            print("assets left on the service:", len(emu.assets()))


if __name__ == "__main__":
    main()
