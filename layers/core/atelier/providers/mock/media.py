"""Small, real media files for the mock provider's outputs."""

from __future__ import annotations

import hashlib
import struct
import zlib

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(seed: str, *, size: int = 64) -> bytes:
    """A valid ``size`` x ``size`` RGB PNG: a gradient whose colours depend on ``seed``."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type: none
        for x in range(size):
            rows += bytes(((r + x * 4) % 256, (g + y * 4) % 256, (b + (x + y) * 2) % 256))
    header = struct.pack('>IIBBBBB', size, size, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b'IHDR', header) + _chunk(b'IDAT', zlib.compress(bytes(rows))) + _chunk(b'IEND', b'')


def mp4(seed: str, *, seconds: int = 1) -> bytes:
    """Bytes shaped like an MP4 (an ``ftyp`` box and an opaque ``mdat``); not a playable video."""
    ftyp = b'ftyp' + b'isom' + struct.pack('>I', 512) + b'isomiso2mp41'
    payload = hashlib.sha256(seed.encode()).digest() * (64 * max(1, seconds))
    mdat = b'mdat' + payload
    return struct.pack('>I', len(ftyp) + 4) + ftyp + struct.pack('>I', len(mdat) + 4) + mdat
