"""Width and height of an encoded image read from its header, without decoding a pixel.

Decoders allocate the full frame their header declares, so a few hundred bytes can ask for
gigabytes (a 20000x20000 PNG of one colour compresses to about 400 KB). Every compressed frame
(``sensor_msgs/CompressedImage``, image files given to ``bisenetv2 segment``) is measured here and
checked against ``max_input_pixels`` before OpenCV decodes it.

Formats: PNG, JPEG, BMP, WebP, TIFF and binary/text PPM/PGM/PBM (OpenCV's formats among
``conventions.IMAGE_SUFFIXES``). Anything else gives None: callers refuse it rather than decode blind.
ROS-free and numpy/cv2-free: pure byte parsing of a ``bytes``-like object.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); C4, C8, CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RST0-7, SOI: no length field
HEADER_FORMATS = "JPEG, PNG, BMP, WebP, TIFF, PPM/PGM"


def declared_size(data) -> tuple[int, int] | None:
    """(width, height) the header of an encoded image declares, or None for an unknown or cut header."""
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    head = bytes(view[:32])
    try:
        if head.startswith(PNG_SIGNATURE):
            return _png(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(view)
        if head.startswith(b"BM"):
            return _bmp(bytes(view[:26]))
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(view)
        if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456":
            return _netpbm(bytes(view[:4096]))
    except (struct.error, IndexError, ValueError):  # a header cut short
        return None
    return None


def _png(head: bytes) -> tuple[int, int] | None:
    if head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _jpeg(view) -> tuple[int, int] | None:
    """Walks the marker segments up to the first start-of-frame; each step moves forward, so the
    walk is linear in the data and ends at the data's end at the latest."""
    position, size = 2, len(view)
    while position + 4 <= size:
        if view[position] != 0xFF:
            return None  # not a marker where one must be
        marker = view[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = (view[position + 2] << 8) | view[position + 3]
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if position + 9 > size:
                return None
            height = (view[position + 5] << 8) | view[position + 6]
            width = (view[position + 7] << 8) | view[position + 8]
            return width, height
        position += 2 + length
    return None


def _bmp(head: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", head[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _webp(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the 3-byte frame tag and the start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one, after the 0x2f signature
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes, minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _tiff(view) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first image file directory (what OpenCV reads)."""
    order = "<" if bytes(view[:2]) == b"II" else ">"
    (offset,) = struct.unpack(order + "I", bytes(view[4:8]))
    (count,) = struct.unpack(order + "H", bytes(view[offset:offset + 2]))
    sizes: dict[int, int] = {}
    for index in range(count):
        entry = bytes(view[offset + 2 + 12 * index: offset + 14 + 12 * index])
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            if kind == 3:  # SHORT, left-justified in the 4-byte value field
                sizes[tag] = struct.unpack(order + "H", entry[8:10])[0]
            elif kind == 4:  # LONG
                sizes[tag] = struct.unpack(order + "I", entry[8:12])[0]
    if 256 in sizes and 257 in sizes:
        return sizes[256], sizes[257]
    return None


def _netpbm(head: bytes) -> tuple[int, int] | None:
    """Magic, width, height: whitespace-separated tokens, '#' comments to the end of a line."""
    tokens: list[bytes] = []
    for line in head.split(b"\n")[:-1]:  # complete lines only: a number cut at the end would read smaller
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 3:
            return int(tokens[1]), int(tokens[2])
    return None
