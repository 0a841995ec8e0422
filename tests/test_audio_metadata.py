"""Audio (and video) metadata: stripped by default, losslessly where the file is otherwise acceptable.

An MP3 or WAV the profile accepts loses its tags, pictures and non-audio chunks without its audio
being touched: the MP3 frames and the WAV ``fmt ``/``data`` chunks come out byte for byte. What
ffmpeg converts carries no metadata, picture, data, subtitle or attachment stream. ``--keep-metadata``
keeps all of it. Every file here is real: encoded by the real ffmpeg, tagged byte by byte the way
taggers write tags, and run through the real command line.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import wave
from pathlib import Path
from typing import Any

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CORPUS

from nvmedia.cli import main
from nvmedia.ffmpeg import find_ffmpeg
from nvmedia.normalize.audio_metadata import audio_rewrite, write_rewrite
from nvmedia.normalize.metadata import MalformedContainerError

SECRET = "Anna Example, 12 Main Street"
"""A name and a place a recording should never take along."""


def _ffmpeg(*args: str) -> None:
    done = subprocess.run(
        [find_ffmpeg(), "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _prepare(paths: list[Path], out: Path, *extra: str) -> list[dict[str, Any]]:
    manifest = out / "manifest.jsonl"
    code = main(["prepare", *map(str, paths), "--dry-run", "--keep", str(out / "kept"), "-o", str(manifest), *extra])
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert code == 0, [r.get("error") for r in records]
    return [r for r in records if r["type"] == "item"]


def _streams_and_tags(path: Path) -> tuple[list[str], dict[str, str]]:
    """Stream types and every metadata tag (container and streams) libav sees in ``path``."""
    with av.open(str(path), metadata_errors="ignore") as container:
        tags = dict(container.metadata)
        for stream in container.streams:
            tags.update({f"{stream.index}:{k}": v for k, v in stream.metadata.items()})
        return [s.type for s in container.streams], tags


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


# --------------------------------------------------------------------------- tags, the way taggers write them


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _id3v2_frame(fid: bytes, payload: bytes) -> bytes:
    return fid + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def _cover_jpeg(tmp_path: Path) -> bytes:
    cover = tmp_path / "cover.jpg"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=300x300", "-frames:v", "1", str(cover))
    return cover.read_bytes()


def _id3v2(cover: bytes, *, padding: int = 256) -> bytes:
    frames = b"".join(
        [
            _id3v2_frame(b"TIT2", b"\x03Voice memo"),
            _id3v2_frame(b"TPE1", b"\x03" + SECRET.encode()),
            _id3v2_frame(b"TYER", b"\x032024"),
            _id3v2_frame(b"COMM", b"\x03eng\x00recorded at " + SECRET.encode()),
            _id3v2_frame(b"APIC", b"\x00image/jpeg\x00\x03\x00" + cover),
        ]
    )
    body = frames + bytes(padding)
    return b"ID3\x03\x00\x00" + _syncsafe(len(body)) + body


def _ape_tag() -> bytes:
    item = struct.pack("<II", len(SECRET), 0) + b"Artist\x00" + SECRET.encode()
    size = len(item) + 32  # items and footer
    header = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0xA0000000) + bytes(8)
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0x80000000) + bytes(8)
    return header + item + footer


def _lyrics3v2() -> bytes:
    field = b"LYR" + b"%05d" % len(SECRET) + SECRET.encode()
    body = b"LYRICSBEGIN" + field
    return body + b"%06d" % len(body) + b"LYRICS200"


def _id3v1() -> bytes:
    return b"TAG" + b"Voice memo".ljust(30, b"\x00") + SECRET.encode()[:30].ljust(30, b"\x00") + bytes(30 + 4 + 30 + 1)


@pytest.fixture(scope="module")
def mp3_frames(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two seconds of MP3 frames with nothing else: a Xing/Info frame, then audio."""
    path = tmp_path_factory.mktemp("mp3") / "frames.mp3"
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
        "-c:a", "libmp3lame", "-b:a", "64k", "-map_metadata", "-1", "-id3v2_version", "0", str(path),
    )  # fmt: skip
    data = path.read_bytes()
    assert data[:2] == b"\xff\xfb" and b"Info" in data[:64]
    return data


@pytest.fixture(scope="module")
def cover(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _cover_jpeg(tmp_path_factory.mktemp("cover"))


# --------------------------------------------------------------------------- MP3


def test_mp3_loses_id3v2_ape_lyrics_id3v1_and_its_cover_with_frames_untouched(
    mp3_frames: bytes, cover: bytes, tmp_path: Path
) -> None:
    source = tmp_path / "memo.mp3"
    source.write_bytes(_id3v2(cover) + mp3_frames + _ape_tag() + _lyrics3v2() + _id3v1())
    streams, tags = _streams_and_tags(source)
    assert "video" in streams and any(SECRET in v for v in tags.values()), "the fixture must carry what is stripped"
    [record] = _prepare([source], tmp_path)
    assert record["status"] == "ok" and record["actions"] == ["strip-metadata"]
    out = Path(record["kept"])
    assert out.read_bytes() == mp3_frames, "the audio frames must come out byte for byte, and nothing else"
    assert _streams_and_tags(out) == (["audio"], {})
    assert record["output"]["mime"] == "audio/mpeg" and record["output"]["bytes"] == len(mp3_frames)


def test_mp3_tagged_and_given_a_cover_by_ffmpeg_keeps_its_audio_packets(cover: bytes, tmp_path: Path) -> None:
    picture = tmp_path / "cover.jpg"
    picture.write_bytes(cover)
    source = tmp_path / "tagged.mp3"
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=2", "-i", str(picture),
        "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-b:a", "64k", "-c:v", "copy",
        "-disposition:v", "attached_pic", "-id3v2_version", "3", "-write_id3v1", "1",
        "-metadata", f"artist={SECRET}", "-metadata", "date=2024-05-01", "-metadata", "title=Voice memo",
        str(source),
    )  # fmt: skip
    [record] = _prepare([source], tmp_path)
    assert record["actions"] == ["strip-metadata"]
    out = Path(record["kept"])
    assert _streams_and_tags(out) == (["audio"], {})
    assert _audio_packets(out) == _audio_packets(source)
    assert SECRET.encode() not in out.read_bytes() and b"ID3" not in out.read_bytes()[:10]


def test_mp3_with_an_id3v24_tag_appended_at_the_end_loses_it(mp3_frames: bytes, tmp_path: Path) -> None:
    # libav's decoder reports such a tail as invalid data (validation fails the file before any strip),
    # so the rewrite is checked on its own.
    frame = _id3v2_frame(b"TPE1", b"\x03" + SECRET.encode())
    header = b"ID3\x04\x00\x10" + _syncsafe(len(frame))  # footer flag set
    source = tmp_path / "appended.mp3"
    source.write_bytes(mp3_frames + header + frame + b"3DI" + header[3:])
    rewrite = audio_rewrite(source, "mp3")
    assert rewrite is not None and rewrite.pieces == ((0, len(mp3_frames)),)
    write_rewrite(source, rewrite, tmp_path / "out.mp3")
    assert (tmp_path / "out.mp3").read_bytes() == mp3_frames


def test_mp3_without_tags_still_passes_through_byte_for_byte(mp3_frames: bytes, tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp3"
    plain.write_bytes(mp3_frames)
    empty_tag = tmp_path / "empty_tag.mp3"  # what ffmpeg writes with -fflags +bitexact: a tag of padding only
    empty_tag.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(10) + bytes(10) + mp3_frames)
    for source, record in zip([plain, empty_tag], _prepare([plain, empty_tag], tmp_path), strict=True):
        assert record["actions"] == []
        assert Path(record["kept"]).read_bytes() == source.read_bytes()


# --------------------------------------------------------------------------- WAV


def _chunk(cid: bytes, payload: bytes) -> bytes:
    return cid + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8, "the RIFF size must match the file"
    found, at = [], 12
    while at + 8 <= len(data):
        cid, size = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        found.append((cid, data[at + 8 : at + 8 + size]))
        at += 8 + size + (size & 1)
    assert at == len(data)
    return found


@pytest.fixture(scope="module")
def pcm_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The ``fmt `` and ``data`` payloads of one second of 16 kHz mono 16-bit PCM."""
    path = tmp_path_factory.mktemp("wav") / "pcm.wav"
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=16000:duration=1",
        "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-map_metadata", "-1", str(path),
    )  # fmt: skip
    chunks = dict(_chunks(path.read_bytes()))
    return chunks[b"fmt "], chunks[b"data"]


def _recorder_wav(fmt: bytes, data: bytes) -> bytes:
    """A WAV as field recorders and DAWs write it: metadata chunks before and after the samples."""
    info = _chunk(b"INAM", b"Interview\x00") + _chunk(b"IART", SECRET.encode() + b"\x00")
    bext = (b"Recorded at " + SECRET.encode()).ljust(256, b"\x00") + b"Zoom H5".ljust(32, b"\x00")
    bext += b"2024-05-01" + b"10:42:00" + bytes(8 + 2 + 64 + 190)
    ixml = b'<?xml version="1.0"?><BWFXML><NOTE>' + SECRET.encode() + b"</NOTE></BWFXML>"
    cue = struct.pack("<I", 1) + struct.pack("<II4sIII", 1, 0, b"data", 0, 0, 4000)
    id3 = b"ID3\x03\x00\x00" + _syncsafe(len(_id3v2_frame(b"TPE1", b"\x03" + SECRET.encode())))
    id3 += _id3v2_frame(b"TPE1", b"\x03" + SECRET.encode())
    body = b"".join(
        [
            _chunk(b"fmt ", fmt),
            _chunk(b"bext", bext),
            _chunk(b"JUNK", bytes(27)),
            _chunk(b"iXML", ixml),
            _chunk(b"data", data),
            _chunk(b"LIST", b"INFO" + info),
            _chunk(b"cue ", cue),
            _chunk(b"id3 ", id3),
            _chunk(b"_PMX", b"<x:xmpmeta>" + SECRET.encode() + b"</x:xmpmeta>"),
        ]
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_wav_loses_every_chunk_but_fmt_and_data_which_stay_byte_identical(
    pcm_wav: tuple[bytes, bytes], tmp_path: Path
) -> None:
    fmt, data = pcm_wav
    source = tmp_path / "recorder.wav"
    source.write_bytes(_recorder_wav(fmt, data))
    assert any(SECRET in v for v in _streams_and_tags(source)[1].values())
    [record] = _prepare([source], tmp_path)
    assert record["status"] == "ok" and record["actions"] == ["strip-metadata"]
    out = Path(record["kept"])
    assert _chunks(out.read_bytes()) == [(b"fmt ", fmt), (b"data", data)]
    assert SECRET.encode() not in out.read_bytes()
    assert _streams_and_tags(out) == (["audio"], {})
    with wave.open(str(out)) as reader:
        assert reader.readframes(reader.getnframes()) == data


def test_a_daw_wav_with_broadcast_metadata_is_stripped(tmp_path: Path) -> None:
    # Logic Pro X wrote a bext chunk with dates and a UMID into this corpus file.
    source = CORPUS / "pydub__test1-24bit.wav"
    assert "umid" in _streams_and_tags(source)[1]
    [record] = _prepare([source], tmp_path)
    assert record["actions"] == ["strip-metadata"]
    out = Path(record["kept"])
    assert [cid for cid, _ in _chunks(out.read_bytes())] == [b"fmt ", b"data"]
    assert dict(_chunks(out.read_bytes()))[b"data"] == dict(_chunks(source.read_bytes()))[b"data"]
    assert _streams_and_tags(out)[1] == {}


def test_wav_with_an_odd_sized_chunk_keeps_its_alignment(pcm_wav: tuple[bytes, bytes], tmp_path: Path) -> None:
    fmt, data = pcm_wav
    odd = data[:-1]  # 8-bit-style odd length: the pad byte must follow it
    fmt8 = struct.pack("<HHIIHH", 1, 1, 16000, 16000, 1, 8)
    body = _chunk(b"fmt ", fmt8) + _chunk(b"LIST", b"INFOIART\x03\x00\x00\x00ab\x00\x00") + _chunk(b"data", odd)
    source = tmp_path / "odd.wav"
    source.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    [record] = _prepare([source], tmp_path)
    assert _chunks(Path(record["kept"]).read_bytes()) == [(b"fmt ", fmt8), (b"data", odd)]


# --------------------------------------------------------------------------- --keep-metadata


def test_keep_metadata_keeps_every_tag_and_picture(
    mp3_frames: bytes, cover: bytes, pcm_wav: tuple[bytes, bytes], tmp_path: Path
) -> None:
    mp3 = tmp_path / "memo.mp3"
    mp3.write_bytes(_id3v2(cover) + mp3_frames + _ape_tag() + _id3v1())
    wav = tmp_path / "recorder.wav"
    wav.write_bytes(_recorder_wav(*pcm_wav))
    for source, record in zip([mp3, wav], _prepare([mp3, wav], tmp_path, "--keep-metadata"), strict=True):
        assert record["actions"] == []
        assert Path(record["kept"]).read_bytes() == source.read_bytes()


# --------------------------------------------------------------------------- converted audio and video


def test_converted_audio_has_no_tags_and_no_picture(cover: bytes, tmp_path: Path) -> None:
    picture = tmp_path / "cover.jpg"
    picture.write_bytes(cover)
    flac = tmp_path / "tagged.flac"  # short: becomes WAV
    m4a = tmp_path / "tagged.m4a"  # 20 s: too big for WAV inline, becomes MP3
    for path, seconds, codec in ((flac, 2, "flac"), (m4a, 20, "aac")):
        _ffmpeg(
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-i", str(picture),
            "-map", "0:a", "-map", "1:v", "-c:a", codec, "-c:v", "copy", "-disposition:v", "attached_pic",
            "-metadata", f"artist={SECRET}", "-metadata", "title=Voice memo", "-metadata", "location=+48.85+002.35/",
            str(path),
        )  # fmt: skip
        assert "video" in _streams_and_tags(path)[0]
    records = _prepare([flac, m4a], tmp_path)
    assert [r["output"]["mime"] for r in records] == ["audio/wav", "audio/mpeg"]
    for record in records:
        out = Path(record["kept"])
        assert _streams_and_tags(out) == (["audio"], {})
        data = out.read_bytes()
        assert SECRET.encode() not in data and b"LIST" not in data
        assert re.search(rb"Lav[fc]\d", data) is None, "no encoder version either"
        assert not data.startswith(b"ID3"), "a converted MP3 carries no ID3 tag at all"


def _tagged_video(path: Path, cover: Path, srt: Path) -> None:
    """An MP4 as a phone or an action camera leaves it: tags, a date, a place, a subtitle and a timecode
    track, chapters and a cover picture, around H.264 video and AAC audio the profile accepts as they are."""
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\n" + SECRET + "\n")
    chapters = path.with_suffix(".txt")
    chapters.write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=" + SECRET + "\n")
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
        "-i", str(srt), "-i", str(cover), "-f", "ffmetadata", "-i", str(chapters),
        "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map", "3:v", "-map_chapters", "4",
        "-c:v:0", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "mov_text",
        "-c:v:1", "copy", "-disposition:v:1", "attached_pic",
        "-timecode", "01:02:03:04", "-metadata", f"title={SECRET}", "-metadata", "location=+48.8584+002.2945/",
        "-metadata", "creation_time=2024-05-01T10:42:00Z", "-metadata:s:v:0", f"handler_name={SECRET}",
        str(path),
    )  # fmt: skip


def test_video_loses_tags_chapters_pictures_and_extra_tracks_in_a_remux(cover: bytes, tmp_path: Path) -> None:
    picture = tmp_path / "cover.jpg"
    picture.write_bytes(cover)
    source = tmp_path / "clip.mp4"
    _tagged_video(source, picture, tmp_path / "clip.srt")
    streams, tags = _streams_and_tags(source)
    assert {"subtitle", "data"} <= set(streams) and streams.count("video") == 2 and "title" in tags
    [record] = _prepare([source], tmp_path)
    assert record["actions"] == ["strip-metadata", "remux:mp4"], "acceptable streams are copied, not re-encoded"
    out = Path(record["kept"])
    streams, tags = _streams_and_tags(out)
    assert streams == ["video", "audio"]
    assert set(tags) <= {"major_brand", "minor_version", "compatible_brands", "0:language", "1:language"} | {
        f"{i}:{k}" for i in (0, 1) for k in ("handler_name", "vendor_id")
    }
    assert SECRET not in json.dumps(tags) and SECRET.encode() not in out.read_bytes()
    assert b"chpl" not in out.read_bytes(), "no chapters"
    with av.open(str(out)) as container:
        assert container.chapters() == []


def test_matroska_attachments_and_subtitles_do_not_reach_the_mp4(cover: bytes, tmp_path: Path) -> None:
    picture = tmp_path / "cover.jpg"
    picture.write_bytes(cover)
    srt = tmp_path / "notes.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\n" + SECRET + "\n")
    notes = tmp_path / "notes.txt"
    notes.write_text(f"shot by {SECRET}\n")
    source = tmp_path / "clip.mkv"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1", "-i", str(srt),
        "-map", "0:v", "-map", "1:s", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-attach", str(picture), "-metadata:s:t:0", "mimetype=image/jpeg",
        "-attach", str(notes), "-metadata:s:t:1", "mimetype=text/plain", "-metadata", f"title={SECRET}",
        str(source),
    )  # fmt: skip
    # libav shows an attached image as a cover picture (a second video stream), the text as an attachment.
    assert _streams_and_tags(source)[0] == ["video", "subtitle", "video", "attachment"]
    [record] = _prepare([source], tmp_path)
    assert "remux:mp4" in record["actions"]
    out = Path(record["kept"])
    assert _streams_and_tags(out)[0] == ["video"]
    assert SECRET.encode() not in out.read_bytes() and cover[:64] not in out.read_bytes()


def test_keep_metadata_passes_a_tagged_video_through(cover: bytes, tmp_path: Path) -> None:
    picture = tmp_path / "cover.jpg"
    picture.write_bytes(cover)
    source = tmp_path / "clip.mp4"
    _tagged_video(source, picture, tmp_path / "clip.srt")
    [record] = _prepare([source], tmp_path, "--keep-metadata")
    assert record["actions"] == []
    assert Path(record["kept"]).read_bytes() == source.read_bytes()


# --------------------------------------------------------------------------- robustness


_FRAME = b"\xff\xfb\x50\xc0" + bytes(204)  # MPEG-1 layer III, 64 kbit/s, 44.1 kHz: 208 bytes
_MP3_SAMPLE = _id3v2(b"\xff\xd8\xff" * 30) + _FRAME * 3
_MP3_SAMPLE += _ape_tag() + _id3v1()
_WAV_SAMPLE = _recorder_wav(struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16), bytes(400))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    container=st.sampled_from(["mp3", "wav"]),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_damaged_audio_never_raises_anything_but_malformed(
    container: str, cut: float, flips: list[tuple[float, int]], tmp_path: Path
) -> None:
    data = bytearray(_MP3_SAMPLE if container == "mp3" else _WAV_SAMPLE)
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    path = tmp_path / f"damaged.{container}"
    path.write_bytes(bytes(data[: max(1, int(cut * len(data)))]))
    try:
        rewrite = audio_rewrite(path, container)
    except MalformedContainerError:
        return
    if rewrite is not None:
        assert 0 < rewrite.size <= path.stat().st_size + 1  # a WAV may gain the pad byte its last chunk lacked
