"""Draws assets/refs/spheres/: six 512×512 renders of glossy spheres, each with its own colour,
light direction and backdrop, made for this project (public domain). Python stdlib only:

    python3 assets/refs/make_spheres.py
"""
import math
import os
import struct
import zlib

SIZE = 512
SPHERES = [  # colour, light direction, backdrop top/bottom
    ((0.85, 0.20, 0.20), (-0.5, 0.6, 0.6), (0.93, 0.93, 0.96), (0.75, 0.76, 0.80)),
    ((0.20, 0.55, 0.85), (0.4, 0.7, 0.6), (0.96, 0.94, 0.90), (0.80, 0.76, 0.70)),
    ((0.25, 0.70, 0.30), (-0.2, 0.8, 0.5), (0.92, 0.95, 0.92), (0.72, 0.78, 0.72)),
    ((0.90, 0.70, 0.15), (0.6, 0.5, 0.6), (0.95, 0.95, 0.95), (0.70, 0.70, 0.72)),
    ((0.60, 0.30, 0.75), (-0.6, 0.4, 0.7), (0.90, 0.92, 0.97), (0.70, 0.72, 0.82)),
    ((0.95, 0.50, 0.65), (0.1, 0.9, 0.4), (0.97, 0.93, 0.93), (0.80, 0.72, 0.74)),
]


def normalise(v):
    n = math.sqrt(sum(c * c for c in v))
    return tuple(c / n for c in v)


def pixel(x, y, colour, light, top, bottom):
    u, v = (x + 0.5) / SIZE * 2 - 1, 1 - (y + 0.5) / SIZE * 2
    r = 0.62
    d2 = u * u + (v - 0.05) * (v - 0.05)
    if d2 < r * r:
        n = (u / r, (v - 0.05) / r, math.sqrt(max(0.0, 1 - d2 / (r * r))))
        diffuse = max(0.0, sum(a * b for a, b in zip(n, light)))
        half = normalise((light[0], light[1], light[2] + 1))
        spec = max(0.0, sum(a * b for a, b in zip(n, half))) ** 60
        return tuple(min(1.0, c * (0.15 + 0.85 * diffuse) + 0.6 * spec) for c in colour)
    t = y / (SIZE - 1)
    base = tuple(a * (1 - t) + b * t for a, b in zip(top, bottom))
    # A soft contact shadow under the sphere.
    shadow = math.exp(-((u / 0.55) ** 2 + ((v + 0.62) / 0.08) ** 2))
    return tuple(c * (1 - 0.45 * shadow) for c in base)


def png(path, rows):
    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spheres")
    os.makedirs(out, exist_ok=True)
    for i, (colour, light, top, bottom) in enumerate(SPHERES):
        light = normalise(light)
        rows = [
            [round(255 * c) for x in range(SIZE) for c in pixel(x, y, colour, light, top, bottom)]
            for y in range(SIZE)
        ]
        png(os.path.join(out, f"sphere{i}.png"), rows)


if __name__ == "__main__":
    main()
