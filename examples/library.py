"""nvmedia as a library: prepare files for one request, rewrite a conversation, send both, delete the uploads.

python examples/library.py --emulate              # offline: a local emulator of the service
python examples/library.py photo.heic memo.m4a    # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from demo import MODEL, Service, inputs, parser, service

import nvmedia


def ask(svc: Service, messages: list[Any], headers: dict[str, str]) -> str:
    """One chat-completions request; the answer's text."""
    reply = httpx.post(
        f"{svc.base_url}/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 512},
        headers={"Authorization": f"Bearer {svc.key}", **headers},
        timeout=300,
    )
    reply.raise_for_status()
    return str(reply.json()["choices"][0]["message"]["content"])


def main() -> None:
    args = parser(__doc__).parse_args()
    with ExitStack() as stack:
        photo, memo = inputs(stack, args.files)
        svc = service(stack, args.emulate)

        # 1. Files -> one ready-to-send message (small ones inline, large ones uploaded).
        with nvmedia.prepare([photo, memo], **svc.media) as prep:
            for item in prep.items:
                print(f"{Path(item.source).name}: {item.delivery} {item.output.mime if item.output else ''}")
            messages = [{"role": "system", "content": "/no_think"}, prep.message("Describe the picture and the sound.")]
            print("answer:", ask(svc, messages, prep.headers))
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
        with nvmedia.rewrite_messages(conversation, **svc.media) as rw:
            print(f"rewritten: {len(rw.asset_ids)} asset(s) in the header")
            print("answer:", ask(svc, rw.messages, rw.headers))
        if svc.emulator is not None:
            print("assets left on the service:", len(svc.emulator.assets()))


if __name__ == "__main__":
    main()
