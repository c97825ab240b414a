"""Minimal 16-bit PNG codec for RGB / RGBA / grey images.

Pillow reads and writes 16-bit *greyscale* PNG, but silently reduces 48-bit RGB and 64-bit RGBA
PNGs to 8 bits and cannot write them. Deblurring users with 16-bit sources expect the bit depth
kept, so this module does just that: non-interlaced, 16-bit, colour types 0 (grey), 2 (RGB),
4 (grey+alpha) and 6 (RGBA). Everything else goes through Pillow.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """Return (width, height, bit_depth, colour_type, interlace) of PNG bytes, or None if not PNG."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, ctype, interlace


def _unfilter(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters (PNG spec section 9). raw holds height*(1+stride) bytes."""
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        ftype = int(rows[y, 0])
        line = rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype == 1:  # Sub: running sum per byte of the pixel, vectorised
            cur = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) & 0xFF
        elif ftype in (3, 4):  # Average / Paeth depend on the left pixel: loop over pixels
            cur = np.zeros(stride, dtype=np.int32)
            zero = np.zeros(bpp, dtype=np.int32)
            for x in range(0, stride, bpp):
                a = cur[x - bpp:x] if x else zero
                b = prev[x:x + bpp]
                if ftype == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[x - bpp:x] if x else zero
                    p = a + b - c
                    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
                    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
                cur[x:x + bpp] = (line[x:x + bpp] + pred) & 0xFF
        else:
            raise ValueError(f"corrupt PNG: unknown filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def decode_png16(data: bytes) -> np.ndarray:
    """Decode a 16-bit non-interlaced PNG into a uint16 array (H, W, C) with C in {1, 2, 3, 4}."""
    header = png_header(data)
    if header is None:
        raise ValueError("not a PNG file")
    w, h, depth, ctype, interlace = header
    if depth != 16 or ctype not in _CHANNELS:
        raise ValueError(f"decode_png16 handles 16-bit grey/RGB/RGBA only (got depth {depth}, type {ctype})")
    if interlace:
        raise ValueError("interlaced 16-bit PNG is not supported")
    pos, idat = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype_chunk = data[pos + 4:pos + 8]
        if ctype_chunk == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif ctype_chunk == b"IEND":
            break
        pos += 12 + length
    channels = _CHANNELS[ctype]
    stride = w * channels * 2
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as exc:
        raise ValueError(f"truncated or corrupt PNG data ({exc})") from None
    if raw.size < h * (stride + 1):
        raise ValueError("truncated PNG data")
    pixels = _unfilter(raw[: h * (stride + 1)], h, stride, channels * 2)
    return pixels.view(">u2").astype(np.uint16).reshape(h, w, channels)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The payload of the first chunk of type ``kind`` (e.g. ``b"eXIf"``) in the PNG file ``data``, or None."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == kind:
            return data[pos + 8:pos + 8 + length]
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + length
    return None


def encode_png16(array: np.ndarray, level: int = 6, exif: bytes | None = None) -> bytes:
    """Encode a uint16 array (H, W) or (H, W, C), C in {1, 2, 3, 4}, as a 16-bit PNG (filter 'Up');
    ``exif``: an EXIF block (TIFF data, without the ``Exif\\0\\0`` prefix) written as an eXIf chunk."""
    a = np.asarray(array, dtype=np.uint16)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    ctype = {1: 0, 3: 2, 2: 4, 4: 6}[c]
    rows = a.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    up = rows.astype(np.int16)
    up[1:] -= rows[:-1].astype(np.int16)
    filtered = np.concatenate(
        [np.full((h, 1), 2, dtype=np.uint8), (up & 0xFF).astype(np.uint8)], axis=1
    )
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + (_chunk(b"eXIf", exif) if exif else b"")
        + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
        + _chunk(b"IEND", b"")
    )
