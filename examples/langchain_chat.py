"""LangChain's ChatNVIDIA with media: paths in messages, every asset in the header, uploads deleted after each call.

pip install 'nvmedia[langchain]'
python examples/langchain_chat.py --emulate             # offline: a local emulator of the service
python examples/langchain_chat.py photo.heic memo.m4a   # the real service (NVIDIA_API_KEY must be set)
"""

from __future__ import annotations

from contextlib import ExitStack

from demo import MODEL, inputs, parser, service
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_nvidia_ai_endpoints import ChatNVIDIA

from nvmedia.integrations.langchain import with_media


def main() -> None:
    args = parser(__doc__).parse_args()
    with ExitStack() as stack:
        photo, memo = inputs(stack, args.files)
        svc = service(stack, args.emulate)
        chat = with_media(ChatNVIDIA(base_url=svc.base_url, model=MODEL, api_key=svc.key), **svc.media)

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
        if svc.emulator is not None:
            print("assets left on the service:", len(svc.emulator.assets()))


if __name__ == "__main__":
    main()
