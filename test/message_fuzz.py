"""Fuzzing the node's message conversion (messages.image_to_frame / compressed_to_frame) in its own process.

Run by test_message_limits.py as ``python test/message_fuzz.py fuzz|decode-peak ...``; prints one JSON
object. The process caps its own address space (RLIMIT_AS) first, so a conversion that tried to
allocate far beyond its bound dies with MemoryError (reported as an unexpected exception) instead of
swapping the machine. Per message, tracemalloc's peak (numpy and OpenCV output arrays) is compared
with the bound stated in ros/messages.py: refusals allocate next to nothing, accepted raw frames at most
5 bytes per pixel, accepted compressed frames at most 4 decoded frames.
"""

from __future__ import annotations

import argparse
import array
import json
import random
import resource
import sys
import time
import tracemalloc
from types import SimpleNamespace

MIB = 1 << 20
REFUSAL_BYTES = 64 * 1024  # a refused message may allocate its error text, nothing frame-sized
RAW_BYTES_PER_PIXEL = 5    # ros/messages.py: 3-byte output frame + a 2-byte contiguous copy of padded YUV
COMPRESSED_FRAMES = 4      # ros/messages.py: decoded frame + decoder workspace (progressive JPEG 4:4:4 ~3 frames)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def cap_address_space(extra_mib: int) -> int:
    """Limits this process's address space to what it maps now plus ``extra_mib``; returns the cap."""
    cap = _status_kib("VmSize") * 1024 + extra_mib * MIB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def _int(rng: random.Random, typical: int) -> int:
    """A declared size: mostly near ``typical``, sometimes a boundary or a huge uint32."""
    from bisenetv2_ros.conventions import MAX_IMAGE_SIDE

    choice = rng.random()
    if choice < 0.6:
        return max(0, typical + rng.randint(-3, 3))
    return rng.choice([0, 1, 2, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE + 1, 8000, 20000, 65535, 2**31 - 1, 2**31,
                       2**32 - 1, rng.randint(0, 2**32 - 1)])


def _as_buffer(rng: random.Random, raw: bytes):
    """``raw`` as one of the buffer types messages carry (numpy: rosbags, array.array: rclpy), or rarely
    as something that is no buffer at all."""
    import numpy as np

    kind = rng.random()
    if kind < 0.5:
        return np.frombuffer(raw, np.uint8).copy()
    if kind < 0.75:
        return array.array("B", raw)
    if kind < 0.97:
        return raw
    return list(raw[:8])


def raw_message(rng: random.Random, max_pixels: int):
    from bisenetv2_ros.ros import messages

    encodings = list(messages.ENCODINGS)
    encoding = rng.choice(encodings + ["", "32FC1", "8UC4", "bayer_rggb12", "rgb8\x00", "\u00e9nc"])
    info = messages.ENCODINGS.get(encoding)
    bytes_per_pixel = info.bytes_per_pixel if info else rng.randint(1, 4)
    side = int(max_pixels ** 0.5)
    width = _int(rng, rng.randint(1, min(side, 96)))
    height = _int(rng, rng.randint(1, min(side, 96)))
    row = width * bytes_per_pixel
    step = rng.choice([row, row, row + rng.randint(1, 16), _int(rng, row), max(0, row - 1)])
    expected = step * height
    candidates = [expected, expected - (step - row), expected + rng.randint(1, 64), rng.randint(0, 4096),
                  max(0, expected - rng.randint(1, 64))]
    size = min(rng.choice(candidates), 4 * MIB)  # the payload itself stays small; only the header lies
    return SimpleNamespace(header=SimpleNamespace(frame_id="fuzz"), height=height, width=width, encoding=encoding,
                           is_bigendian=rng.randint(0, 1), step=step, data=_as_buffer(rng, rng.randbytes(max(0, size))))


def _encoded(rng: random.Random) -> bytes:
    import cv2
    import numpy as np

    height, width = rng.randint(1, 96), rng.randint(1, 96)
    pixels = np.frombuffer(rng.randbytes(height * width * 3), np.uint8).reshape(height, width, 3)
    extension, params = rng.choice([(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                    (".bmp", []), (".webp", [])])
    ok, data = cv2.imencode(extension, pixels if rng.random() < 0.8 else pixels[..., 0].copy(), params)
    return data.tobytes()


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its PNG IHDR or first JPEG frame header patched to declare width x height."""
    buffer = bytearray(data)
    if data.startswith(b"\x89PNG"):
        buffer[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    elif data.startswith(b"\xff\xd8"):
        for marker in (b"\xff\xc0", b"\xff\xc2"):
            at = data.find(marker)
            if at > 0:
                buffer[at + 5:at + 9] = (height & 0xFFFF).to_bytes(2, "big") + (width & 0xFFFF).to_bytes(2, "big")
                break
    return bytes(buffer)


def compressed_message(rng: random.Random, max_pixels: int):
    data = _encoded(rng)
    mutation = rng.random()
    if mutation < 0.25:
        side = int(max_pixels ** 0.5)
        data = _with_size(data, _int(rng, rng.randint(1, 2 * side)), _int(rng, rng.randint(1, 2 * side)))
    elif mutation < 0.45:
        data = data[: rng.randint(0, len(data))]
    elif mutation < 0.65:
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        data = bytes(buffer)
    elif mutation < 0.75:
        data = rng.choice([b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\0\0\0\0WEBP", b"II*\0", b""]) + \
            rng.randbytes(rng.randint(0, 64))
    fmt = rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth", "", "theora"])
    return SimpleNamespace(header=SimpleNamespace(frame_id="fuzz"), format=fmt, data=_as_buffer(rng, data))


def fuzz(seed: int, count: int, max_pixels: int) -> dict:
    from bisenetv2_ros.ros import messages

    rng = random.Random(seed)
    report = {"cases": 0, "refused": 0, "accepted": 0, "unexpected": [], "over_bound": [], "worst_ratio": 0.0}
    tracemalloc.start()
    started = time.monotonic()
    for index in range(count):
        compressed = index % 3 == 2
        msg = compressed_message(rng, max_pixels) if compressed else raw_message(rng, max_pixels)
        description = (f"compressed format={msg.format!r} bytes={len(msg.data)}" if compressed else
                       f"raw {msg.width}x{msg.height} {msg.encoding!r} step={msg.step} bytes={len(msg.data)}")
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        frame = None
        try:
            if compressed:
                frame, _ = messages.compressed_to_frame(msg, max_pixels)
            else:
                frame, _ = messages.image_to_frame(msg, max_pixels)
        except messages.ImageConversionError:
            report["refused"] += 1
        except BaseException as error:  # noqa: BLE001 - exactly what the fuzz test looks for
            report["unexpected"].append(f"{description}: {type(error).__name__}: {error}")
        peak = tracemalloc.get_traced_memory()[1] - before
        if frame is None:
            bound = REFUSAL_BYTES
        else:
            report["accepted"] += 1
            pixels = frame.shape[0] * frame.shape[1]
            if pixels > max_pixels:
                report["over_bound"].append(f"{description}: accepted {frame.shape} above max_pixels")
            bound = REFUSAL_BYTES + (COMPRESSED_FRAMES * 3 * pixels if compressed else RAW_BYTES_PER_PIXEL * pixels)
            report["worst_ratio"] = max(report["worst_ratio"], (peak - REFUSAL_BYTES) / (3 * pixels))
        if peak > bound:
            report["over_bound"].append(f"{description}: peak {peak} bytes > bound {bound}")
        report["cases"] += 1
        del frame, msg
    report["seconds"] = time.monotonic() - started
    return report


def decode_peak(path: str) -> dict:
    """Peak resident growth while decoding the encoded image in ``path`` (written by the caller, so
    encoding it left no high-water mark here), against the decoded frame's size."""
    import numpy as np

    from bisenetv2_ros.ros import messages

    data = np.fromfile(path, np.uint8)
    # VmHWM, this process's own peak (ru_maxrss keeps the parent's across exec), reset to now when allowed
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    before = _status_kib("VmRSS")
    frame, _ = messages.compressed_to_frame(SimpleNamespace(format="x", data=data), 1 << 30)
    grown = (_status_kib("VmHWM") - before) * 1024
    return {"frame_bytes": int(frame.nbytes), "peak_growth_bytes": int(grown)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("fuzz", "decode-peak"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--max-pixels", type=int, default=1 << 20)
    parser.add_argument("--image", default=None, help="decode-peak: the encoded image file")
    parser.add_argument("--cap-mib", type=int, default=512)
    args = parser.parse_args()
    import cv2  # noqa: F401 - mapped before the cap: the cap is for the conversions, not the libraries
    import numpy

    from bisenetv2_ros.ros import messages  # noqa: F401

    cap = cap_address_space(args.cap_mib)
    try:  # the cap must really hold: an allocation of its whole size has to fail
        numpy.empty(cap, numpy.uint8)
        cap_enforced = False
    except MemoryError:
        cap_enforced = True
    if args.mode == "fuzz":
        result = fuzz(args.seed, args.count, args.max_pixels)
    else:
        result = decode_peak(args.image)
    result["address_space_cap"] = cap
    result["cap_enforced"] = cap_enforced
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
