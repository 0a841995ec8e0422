"""The official openai SDK with nvmedia in its upload step: sync, streamed, and async requests.

python examples/openai_sdk.py --emulate             # offline: a local emulator of the service
python examples/openai_sdk.py photo.heic memo.m4a   # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any

from demo import MODEL, Service, inputs, parser, service
from openai import AsyncOpenAI, OpenAI

import nvmedia


async def ask_async(svc: Service, messages: list[dict[str, Any]]) -> str | None:
    client = AsyncOpenAI(base_url=svc.base_url, api_key=svc.key)
    async with await nvmedia.arewrite_messages(messages, **svc.media) as rw:
        reply = await client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
    await client.close()
    return reply.choices[0].message.content


def main() -> None:
    args = parser(__doc__).parse_args()
    with ExitStack() as stack:
        photo, memo = inputs(stack, args.files)
        svc = service(stack, args.emulate)
        client = OpenAI(base_url=svc.base_url, api_key=svc.key)
        messages: list[dict[str, Any]] = [
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

        with nvmedia.rewrite_messages(messages, **svc.media) as rw:  # uploads what is too big to inline
            reply = client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
            print("answer:", reply.choices[0].message.content)
        # leaving the block deleted the assets it uploaded

        with nvmedia.rewrite_messages(messages, **svc.media) as rw:
            stream = client.chat.completions.create(
                model=MODEL, messages=rw.messages, extra_headers=rw.headers, stream=True
            )
            print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))

        print("async:", asyncio.run(ask_async(svc, messages)))
        if svc.emulator is not None:
            print("assets left on the service:", len(svc.emulator.assets()))


if __name__ == "__main__":
    main()
