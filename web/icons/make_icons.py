#!/usr/bin/env python3
"""Draw the answering page's app icons: a white door with a bell dot on the
page's green. Plain Python (zlib only), so any build machine can redraw them:

    python3 web/icons/make_icons.py

Writes icon-192.png, icon-512.png (rounded square, transparent corners),
maskable-512.png (full bleed, the door inside the central safe circle),
apple-touch-icon.png (180, opaque: iOS adds its own rounding) and
../favicon.ico (a 32x32 PNG inside an ICO container).
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
GREEN = (0x17, 0x80, 0x3D)
WHITE = (0xFF, 0xFF, 0xFF)
AMBER = (0xFF, 0xB3, 0x00)
SS = 4  # supersampling per axis, for smooth edges


def png(width, height, rgba_rows):
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in rgba_rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def in_rounded_rect(x, y, x0, y0, x1, y1, r):
    if x < x0 or x > x1 or y < y0 or y > y1:
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def shade(x, y, full_bleed, scale):
    """Colour at (x, y) in a unit square, or None (transparent).

    `scale` shrinks the door around the centre (maskable icons keep it
    inside the safe circle of radius 0.4)."""
    if not full_bleed and not in_rounded_rect(x, y, 0.0, 0.0, 1.0, 1.0, 0.22):
        return None
    # Door coordinates, centred.
    u = 0.5 + (x - 0.5) / scale
    v = 0.5 + (y - 0.5) / scale
    # Frame: an arched door, white.
    door = in_rounded_rect(u, v, 0.30, 0.16, 0.70, 0.84, 0.06)
    if door:
        inner = in_rounded_rect(u, v, 0.36, 0.22, 0.64, 0.84, 0.04)
        if inner:
            # The knob, then the panel in the background green, lighter.
            if (u - 0.585) ** 2 + (v - 0.54) ** 2 <= 0.032 ** 2:
                return WHITE
            return (0x12, 0x69, 0x2F)
        return WHITE
    # The bell dot beside the door.
    if (u - 0.80) ** 2 + (v - 0.30) ** 2 <= 0.075 ** 2:
        return AMBER
    return GREEN


def draw(size, full_bleed=False, scale=1.0, opaque=False):
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(SS):
                for sx in range(SS):
                    x = (px + (sx + 0.5) / SS) / size
                    y = (py + (sy + 0.5) / SS) / size
                    c = shade(x, y, full_bleed, scale)
                    if c is None and opaque:
                        c = GREEN
                    if c is not None:
                        acc[0] += c[0]
                        acc[1] += c[1]
                        acc[2] += c[2]
                        acc[3] += 1
            n = acc[3]
            if n == 0:
                row += [0, 0, 0, 0]
            else:
                row += [acc[0] // n, acc[1] // n, acc[2] // n, 255 * n // (SS * SS)]
        rows.append(row)
    return png(size, size, rows)


def ico(png_bytes, size):
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png_bytes), 6 + 16)
    return header + entry + png_bytes


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


if __name__ == "__main__":
    write("icon-192.png", draw(192))
    write("icon-512.png", draw(512))
    write("maskable-512.png", draw(512, full_bleed=True, scale=0.72))
    write("apple-touch-icon.png", draw(180, full_bleed=True, scale=0.85, opaque=True))
    write("../favicon.ico", ico(draw(32), 32))
