"""The run-wide memory budget (issue 7, item 7): estimates, reduced decodes, serialization, too_large."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image
from support import ROOT

import nvmedia
from nvmedia.config import parse_size
from nvmedia.errors import ConfigError
from nvmedia.memory import MemoryBudget, format_size
from nvmedia.normalize_stage import normalize_source
from nvmedia.settings import Settings
from nvmedia.sources import expand


@pytest.fixture(scope="module")
def big_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny files that decode to many pixels: lossless WEBPs (RGB, RGBA) and a PNG, 6000x6000."""
    folder = tmp_path_factory.mktemp("big")
    made = {}
    rgb = Image.new("RGB", (6000, 6000), (10, 120, 30))
    rgb.paste((200, 40, 90), (0, 0, 3000, 6000))  # left half another colour: the downscale must keep it there
    made["webp"] = folder / "big.webp"
    rgb.save(made["webp"], "WEBP", lossless=True, method=0)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 128))
    made["webp_alpha"] = folder / "alpha.webp"
    rgba.save(made["webp_alpha"], "WEBP", lossless=True, method=0)
    # The PNGs carry 1000x1000 of noise so that each is over a megabyte: a worker task of its own.
    noise = Image.merge("RGB", [Image.effect_noise((1000, 1000), 60)] * 3)
    for name, colour in (("png", (10, 120, 30)), ("png2", (1, 2, 3))):
        image = Image.new("RGB", (6000, 6000), colour)
        image.paste(noise, (0, 0))
        made[name] = folder / f"{name}.png"
        image.save(made[name], "PNG", compress_level=1)
    return made


def _estimate(path: Path) -> int:
    """The bytes a decode of ``path`` reserves, as the observer of an unbounded budget hears them."""
    heard: list[int] = []
    budget = MemoryBudget(1 << 40, observer=lambda event, label, nbytes: heard.append(nbytes))
    (source,) = expand([path], "file")
    item = normalize_source(source, Settings(dry_run=True, jobs=1), path.parent, None, budget)
    assert item.status == "ok", item.error
    return max(heard)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1G", 1 << 30),
        ("512M", 512 << 20),
        ("512MB", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("64k", 64 << 10),
        ("1000", 1000),
    ],
)
def test_max_memory_accepts_bytes_and_unit_suffixes(text: str, expected: int) -> None:
    assert parse_size(text, what="max_memory") == expected


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "1X", ""])
def test_max_memory_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text, what="max_memory")


def test_cli_refuses_a_bad_max_memory_with_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(ROOT / "fixtures/corpus/pillow__hopper.png"), "--dry-run"]
        + ["--max-memory", "lots"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--max-memory" in proc.stderr and "1G or 512M" in proc.stderr


def test_estimate_covers_a_tiny_webp_that_declares_36_megapixels(big_images: dict[str, Path]) -> None:
    path = big_images["webp"]
    assert path.stat().st_size < 10_000
    estimate = _estimate(path)
    # Decoded by libavcodec straight to the cap: one 4-byte frame of 36 MP plus the output, not Pillow's ~16 bytes/px.
    assert 36_000_000 * 4 <= estimate <= 36_000_000 * 6


def test_big_webp_decoded_reduced_keeps_its_pixels_in_place(big_images: dict[str, Path]) -> None:
    with nvmedia.prepare([big_images["webp"]], dry_run=True) as prep:
        (item,) = prep.items
    assert item.status == "ok" and item.output is not None
    assert item.output.pixels is not None and item.output.pixels <= 3_407_872
    assert "resize" in item.actions
    import base64
    import io

    assert item.part is not None
    url = item.part["image_url"]["url"]  # type: ignore[typeddict-item]
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as out:
        out.load()
        assert out.size == (item.output.width, item.output.height)
        left = out.convert("RGB").getpixel((out.width // 4, out.height // 2))
        right = out.convert("RGB").getpixel((3 * out.width // 4, out.height // 2))
    assert left == pytest.approx((200, 40, 90), abs=3)
    assert right == pytest.approx((10, 120, 30), abs=3)


def test_big_webp_with_alpha_keeps_its_alpha_when_decoded_reduced(big_images: dict[str, Path]) -> None:
    with nvmedia.prepare([big_images["webp_alpha"]], dry_run=True) as prep:
        (item,) = prep.items
    assert item.status == "ok" and item.output is not None
    assert item.output.has_alpha


def test_decode_whose_estimate_alone_exceeds_the_budget_is_too_large(big_images: dict[str, Path]) -> None:
    with nvmedia.prepare([big_images["webp"]], dry_run=True, max_memory="64M", on_error="keep") as prep:
        (item,) = prep.items
    assert item.status == "error" and item.error is not None
    assert item.error.code == "too_large"
    estimate = _estimate(big_images["webp"])
    assert format_size(estimate) in item.error.message
    assert "memory budget of 64 MB" in item.error.message
    assert "max_memory" in item.error.hint


def test_cli_reports_too_large_for_a_decode_over_max_memory(big_images: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(big_images["png"]), "--dry-run", "--max-memory", "32M"]
        + ["-o", str(manifest)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    (record,) = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert record["error"]["code"] == "too_large"
    assert "over the memory budget of 32 MB" in record["error"]["message"]


def test_budget_that_fits_one_decode_makes_the_second_wait_for_the_first(big_images: dict[str, Path]) -> None:
    """Two threads, a budget that holds one decode: the second waits until the first releases.

    The first decode is held (inside the observer, after it acquired) until the second is seen
    waiting, so the order below is the only one possible: no timing decides anything.
    """
    first, second = big_images["png"], big_images["png2"]
    limit = int(max(_estimate(first), _estimate(second)) * 1.5)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    first_acquired, second_waiting = threading.Event(), threading.Event()

    def observer(event: str, label: str, nbytes: int) -> None:
        with lock:
            events.append((event, label))
        if (event, label) == ("waiting", second.name):
            second_waiting.set()
        if (event, label) == ("acquired", first.name):
            first_acquired.set()
            assert second_waiting.wait(120), "the second decode never waited"

    budget = MemoryBudget(limit, observer=observer)
    settings = Settings(dry_run=True, jobs=2)
    results = {}

    def work(path: Path) -> None:
        (source,) = expand([path], "file")
        results[path.name] = normalize_source(source, settings, path.parent, None, budget)

    one = threading.Thread(target=work, args=(first,))
    one.start()
    assert first_acquired.wait(120)
    two = threading.Thread(target=work, args=(second,))
    two.start()
    one.join()
    two.join()
    assert events == [
        ("acquired", first.name),
        ("waiting", second.name),
        ("released", first.name),
        ("acquired", second.name),
        ("released", second.name),
    ]
    assert all(item.status == "ok" for item in results.values())
    assert budget.used == 0


_PROCESS_DRIVER = """
import json, multiprocessing, os, sys
from nvmedia.memory import MemoryBudget
from nvmedia.pipeline import run
from nvmedia.settings import Settings

files, limit = [os.path.basename(p) for p in sys.argv[1:3]], int(sys.argv[3])
events = ["waiting", "acquired", "released"]
context = multiprocessing.get_context("fork")
log = context.Array("q", 5 * 3)  # (event, file, pid) per event, written under the array's lock
count = context.RawValue("i", 0)
acquisitions = context.RawValue("i", 0)
someone_waits = context.Event()

def observer(event, label, nbytes):
    with log.get_lock():  # one log for both processes, in the order things happened
        at = count.value
        log[3 * at : 3 * at + 3] = [events.index(event), files.index(label), os.getpid()]
        count.value = at + 1
        first = event == "acquired" and acquisitions.value == 0
        acquisitions.value += event == "acquired"
    if event == "waiting":
        someone_waits.set()
    if first:
        someone_waits.wait(120)  # whoever decodes first holds on until the other is seen waiting

budget = MemoryBudget(limit, observer=observer)
settings = Settings(dry_run=True, jobs=2, pool="process")
statuses = [item.status for items, _ in run(sys.argv[1:3], settings, budget=budget) for item in items]
heard = [(events[log[3 * i]], files[log[3 * i + 1]], log[3 * i + 2]) for i in range(count.value)]
print(json.dumps({"statuses": statuses, "events": heard, "parent": os.getpid()}))
"""


def test_budget_is_shared_by_forked_worker_processes(big_images: dict[str, Path]) -> None:
    """The CLI's default pool: two worker processes share one budget inherited through fork.

    Whichever worker acquires first holds its decode until the other is seen waiting; the
    budget fits one, so the other can only go on once the first released.
    """
    first, second = big_images["png"], big_images["png2"]
    limit = int(max(_estimate(first), _estimate(second)) * 1.5)
    proc = subprocess.run(
        [sys.executable, "-c", _PROCESS_DRIVER, str(first), str(second), str(limit)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["statuses"] == ["ok", "ok"]
    events = [(event, label) for event, label, _ in result["events"]]
    one = next(label for event, label in events if event == "acquired")
    other = second.name if one == first.name else first.name
    # The holder's "acquired" and the other's "waiting" are told outside the lock, in either order;
    # what the budget decides is that the other acquires only after the holder released.
    assert sorted(events[:2]) == [("acquired", one), ("waiting", other)]
    assert events[2:] == [("released", one), ("acquired", other), ("released", other)]
    pids = {label: pid for event, label, pid in result["events"] if event == "acquired"}
    assert result["parent"] not in pids.values()
    assert pids[first.name] != pids[second.name]  # two processes, one budget


def test_renewed_budget_forgets_what_a_dead_worker_held() -> None:
    budget = MemoryBudget(100)
    budget.acquire(80, "held by a worker that died")
    assert budget.used == 80
    budget.renew()
    assert budget.used == 0
    with budget.reserve(90, "next"):
        assert budget.used == 90
    assert budget.used == 0


def test_default_budget_is_a_quarter_of_ram() -> None:
    import os

    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert MemoryBudget().limit == ram // 4


def test_big_jpeg2000_is_decoded_at_a_reduced_resolution_level(tmp_path: Path) -> None:
    """8000x2000 is over four times the cap: OpenJPEG decodes the 4000x1000 level, never the full size."""
    from nvmedia.image_open import decode_estimate, open_image
    from nvmedia.sniff import sniff_path

    path = tmp_path / "wide.jp2"
    Image.linear_gradient("L").resize((8000, 2000)).convert("RGB").save(path, "JPEG2000", irreversible=True)
    reserved = _estimate(path)
    with open_image(path, sniff_path(path), max_pixels=100_000_000) as im:
        full = decode_estimate(im, path.stat().st_size, output_size=(3691, 922))
    assert reserved < full / 2
    with nvmedia.prepare([path], dry_run=True) as prep:
        (item,) = prep.items
    assert item.status == "ok" and item.output is not None
    assert item.output.pixels is not None and item.output.pixels <= 3_407_872
    assert (item.output.width, item.output.height) in ((3691, 922), (3692, 923))  # cap fitted to the level
    assert "resize" in item.actions


def test_budget_serves_waiters_first_come_first_served() -> None:
    """A small decode that would fit queues behind a big one that came first (no starvation)."""
    seen: dict[tuple[str, str], threading.Event] = {}
    order: list[tuple[str, str]] = []
    lock = threading.Lock()

    def observer(event: str, label: str, nbytes: int) -> None:
        with lock:
            order.append((event, label))
            seen.setdefault((event, label), threading.Event()).set()

    def heard(event: str, label: str) -> bool:
        with lock:
            flag = seen.setdefault((event, label), threading.Event())
        return flag.wait(60)

    budget = MemoryBudget(100, observer=observer)
    budget.acquire(60, "a")
    threads = {
        name: threading.Thread(target=budget.acquire, args=(size, name)) for name, size in (("b", 60), ("c", 10))
    }
    threads["b"].start()
    assert heard("waiting", "b")
    threads["c"].start()
    assert heard("waiting", "c")  # 60 + 10 fits, but b came first
    budget.release(60, "a")
    for thread in threads.values():
        thread.join()
    assert order[:4] == [("acquired", "a"), ("waiting", "b"), ("waiting", "c"), ("released", "a")]
    # Both are served once a is gone (their observer calls run outside the lock, in either order).
    assert sorted(order[4:]) == [("acquired", "b"), ("acquired", "c")]
    assert budget.used == 70
