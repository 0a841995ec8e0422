"""Big single-frame WEBPs decoded by libavcodec straight to a reduced size: ``decode_webp_reduced``.

Pillow decodes a WEBP through libwebp's animation decoder, which holds the
canvas, libwebp's own buffer for a lossless image, a ``bytes`` copy of the
frame and Pillow's image at once: about 16 bytes per pixel, 1.4 GB for a 3 KB
lossless 9400x9400 file. libavcodec's WEBP decoder writes the picture into one
frame (4 bytes per pixel for lossless ARGB, 1.5 to 2.5 for lossy YUV) and
swscale then resamples it to the size the profile allows, so the full-size RGB
image never exists: 390 MB for the same file. Animated WEBPs (which libavcodec
does not decode) stay with Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MediaError
from .ffmpeg import file_url

if TYPE_CHECKING:
    from PIL.Image import Image

AV_BYTES_PER_PIXEL = 4
"""What libavcodec's frame holds per source pixel at most (lossless WEBP decodes to ARGB)."""


def decode_webp_reduced(path: Path, size: tuple[int, int], target: tuple[int, int], mode: str) -> Image:
    """Decode the single-frame WEBP at ``path`` (``size`` pixels) and resample it to ``target``.

    Args:
        path: the WEBP file (opened read-only, ``file`` protocol only).
        size: the width and height its header declares (checked against the decoded frame).
        target: the width and height to return.
        mode: ``RGB`` or ``RGBA`` (what Pillow reads from the header).

    Returns:
        A Pillow image of ``target`` size in ``mode`` (without ``info``).

    Raises:
        MediaError: ``corrupt_media`` when libavcodec cannot decode it or finds no frame.
    """
    import av
    from PIL import Image

    what = f"{path.name}: WEBP image"
    try:
        with av.open(file_url(path), format="webp_pipe", container_options={"protocol_whitelist": "file"}) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if (frame.width, frame.height) != size:
                    raise MediaError(
                        f"{what} declares {size[0]}x{size[1]} pixels but its picture is {frame.width}x{frame.height}",
                        code="corrupt_media",
                        hint="the file is damaged; re-export or re-download it",
                    )
                reduced = frame.reformat(
                    width=target[0],
                    height=target[1],
                    format="rgba" if mode == "RGBA" else "rgb24",
                    interpolation="AREA",
                )
                del frame
                plane = reduced.planes[0]
                # VideoFrame.to_image() would drop the alpha: build the image from the plane, row stride and all.
                return Image.frombytes(mode, target, bytes(plane), "raw", mode, plane.line_size, 1)
    except (av.error.FFmpegError, EOFError, OSError, ValueError, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MediaError(
            f"{what} is damaged and cannot be decoded ({reason})",
            code="corrupt_media",
            hint="the file is damaged or truncated; re-export or re-download it",
        ) from None
    raise MediaError(
        f"{what} holds no picture libavcodec can decode",
        code="corrupt_media",
        hint="the file is damaged or truncated; re-export or re-download it",
    )
