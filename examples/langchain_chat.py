"""LangChain's ChatNVIDIA with media: paths in messages, every asset in the header, uploads deleted after each call.

pip install 'nvmedia[langchain]'
python examples/langchain_chat.py --emulate             # offline: a local emulator of the service
python examples/langchain_chat.py photo.heic memo.m4a   # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from demo_media import demo_files
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_nvidia_ai_endpoints import ChatNVIDIA

from nvmedia.integrations.langchain import with_media

MODEL = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"


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
            llm = ChatNVIDIA(base_url=emu.base_url + "/v1", model=MODEL, api_key="nvapi-local")
            where: dict[str, Any] = {"assets_url": emu.assets_url, "api_key": "nvapi-local"}
        else:
            llm = ChatNVIDIA(model=MODEL, api_key=os.environ["NVIDIA_API_KEY"])
            where = {}
        chat = with_media(llm, **where)

        message = HumanMessage(
            content=[
                {"type": "text", "text": "Describe the picture, then the recording."},
                {"type": "image_url", "image_url": {"url": str(photo)}},
                {"type": "audio_url", "audio_url": {"url": str(memo)}},
            ]
        )
        print("invoke:", chat.invoke([SystemMessage(content="/no_think"), message]).content)
        print("stream:", "".join(str(chunk.content) for chunk in chat.stream([message])))

        prompt = ChatPromptTemplate.from_messages(
            [("system", "/no_think"), ("user", "{question} <audio src='{memo}' />")]
        )
        chain = prompt | chat
        print("chain:", chain.invoke({"question": "What do you hear?", "memo": str(memo)}).content)
        if args.emulate:
            print("assets left on the service:", len(emu.assets()))


if __name__ == "__main__":
    main()
