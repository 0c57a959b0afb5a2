"""A tiny Cog predictor for the tests and the local ``cog/echo-image`` model: draws small PNGs from the prompt.

It takes the ``text_to_image`` family's input. A prompt starting with ``fail`` raises (a failed
prediction); one starting with ``slow`` runs in small steps for up to a minute, so it can be canceled.
Self-contained (no ``atelier`` import): Cog runs it in its own worker process.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
import time
import zlib
from pathlib import Path as FilePath

from cog import BasePredictor, Input, Path

_SIDES = {'512x512': 16, '1024x1024': 32}


def png(seed: str, side: int) -> bytes:
    """A valid ``side`` x ``side`` RGB PNG whose colours depend on ``seed``."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    rows = bytearray()
    for y in range(side):
        rows.append(0)
        for x in range(side):
            rows += bytes(((r + x * 8) % 256, (g + y * 8) % 256, (b + (x + y) * 4) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)
    body = chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(bytes(rows))) + chunk(b'IEND', b'')
    return b'\x89PNG\r\n\x1a\n' + body


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.out = FilePath(tempfile.mkdtemp(prefix='cog-echo-'))

    def predict(
        self,
        prompt: str = Input(description='What to draw'),
        negative_prompt: str = Input(default=''),
        num_images: int = Input(default=1, ge=1, le=4),
        resolution: str = Input(default='1024x1024'),
        quality: str = Input(default='standard'),
        seed: int = Input(default=0),
    ) -> list[Path]:
        if prompt.startswith('fail'):
            raise RuntimeError(f'echo-image cannot draw {prompt!r}')
        if prompt.startswith('slow'):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)
        outputs = []
        for n in range(num_images):
            path = self.out / f'{hashlib.sha256(f"{prompt}:{seed}:{n}".encode()).hexdigest()[:16]}.png'
            path.write_bytes(png(f'{prompt}:{seed}:{n}:{quality}', _SIDES.get(resolution, 32)))
            outputs.append(Path(path))
        return outputs
