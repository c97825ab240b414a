import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from diffdeblur.io import ImageError, read_image, write_image
from diffdeblur.png16 import PNG_SIGNATURE, _chunk, decode_png16, encode_png16


def _rand(rng, shape, dtype=np.uint8):
    hi = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, hi + 1, size=shape, dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp", "webp"])
def test_rgb8_lossless_roundtrip(tmp_path, rng, ext):
    a = _rand(rng, (17, 23, 3))
    p = tmp_path / f"x.{ext}"
    Image.fromarray(a).save(p, **({"lossless": True} if ext == "webp" else {}))
    rgb, info = read_image(p)
    assert rgb.dtype == np.float32 and rgb.shape == (17, 23, 3)
    assert np.array_equal(np.round(rgb * 255).astype(np.uint8), a)
    out = tmp_path / f"y.{ext}"
    write_image(out, rgb, info)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), a)


def test_jpeg_roundtrip_close(tmp_path, rng):
    a = np.clip(np.cumsum(_rand(rng, (32, 32, 3)).astype(float), axis=1) / 32, 0, 255).astype(np.uint8)
    p = tmp_path / "x.jpg"
    Image.fromarray(a).save(p, quality=98)
    rgb, info = read_image(p)
    write_image(tmp_path / "y.jpg", rgb, info)
    b = np.asarray(Image.open(tmp_path / "y.jpg")).astype(float)
    assert np.abs(b - rgb * 255).mean() < 3  # re-encoding at quality 95, 4:4:4 stays close


def test_rgb16_png_roundtrip_keeps_bit_depth(tmp_path, rng):
    a = _rand(rng, (9, 11, 3), np.uint16)
    p = tmp_path / "x16.png"
    p.write_bytes(encode_png16(a))
    rgb, info = read_image(p)
    assert info.bit_depth == 16 and not info.grey and info.alpha is None
    assert np.array_equal(np.round(rgb * 65535).astype(np.uint16), a)
    write_image(tmp_path / "y16.png", rgb, info)
    assert np.array_equal(decode_png16((tmp_path / "y16.png").read_bytes()), a)


def test_rgba16_png_alpha_kept(tmp_path, rng):
    a = _rand(rng, (8, 10, 4), np.uint16)
    p = tmp_path / "x.png"
    p.write_bytes(encode_png16(a))
    rgb, info = read_image(p)
    assert info.alpha is not None and info.bit_depth == 16
    write_image(tmp_path / "y.png", rgb, info)
    assert np.array_equal(decode_png16((tmp_path / "y.png").read_bytes()), a)


def _png_with_filter(a: np.ndarray, ftype: int) -> bytes:
    """A 16-bit RGB PNG whose every scanline uses filter ``ftype`` (PNG spec section 9)."""
    h, w, c = a.shape
    rows = a.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = c * 2
    out = []
    prev = np.zeros(rows.shape[1], dtype=np.int32)
    for y in range(h):
        cur = rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if ftype == 1:
            pred = left
        elif ftype == 3:
            pred = (left + prev) >> 1
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(bytes([ftype]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes())
        prev = cur
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"".join(out))) + _chunk(b"IEND", b"")


@pytest.mark.parametrize("ftype", [1, 3, 4])
def test_png16_decoder_handles_all_filters(rng, ftype):
    a = _rand(rng, (6, 7, 3), np.uint16)
    assert np.array_equal(decode_png16(_png_with_filter(a, ftype)), a)


def test_grey16_png_and_tiff(tmp_path, rng):
    g = _rand(rng, (12, 13), np.uint16)
    for ext in ("png", "tif"):
        p = tmp_path / f"g.{ext}"
        Image.fromarray(g).save(p)
        rgb, info = read_image(p)
        assert info.grey and info.bit_depth == 16
        assert np.allclose(rgb[:, :, 0], g / 65535.0, atol=1e-6) and np.allclose(rgb[:, :, 0], rgb[:, :, 2])
        write_image(tmp_path / f"o.{ext}", rgb, info)
        back = np.asarray(Image.open(tmp_path / f"o.{ext}"))
        assert back.dtype == np.uint16 and np.array_equal(back, g)


def test_grey8_and_grey_alpha(tmp_path, rng):
    g = _rand(rng, (10, 12))
    Image.fromarray(g).save(tmp_path / "l.png")
    rgb, info = read_image(tmp_path / "l.png")
    assert info.grey and info.alpha is None
    write_image(tmp_path / "l2.png", rgb, info)
    out = Image.open(tmp_path / "l2.png")
    assert out.mode == "L" and np.array_equal(np.asarray(out), g)
    la = np.stack([g, _rand(rng, (10, 12))], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    rgb, info = read_image(tmp_path / "la.png")
    assert info.grey and info.alpha is not None
    write_image(tmp_path / "la2.png", rgb, info)
    out = Image.open(tmp_path / "la2.png")
    assert out.mode == "LA" and np.array_equal(np.asarray(out), la)


def test_rgba_alpha_reattached(tmp_path, rng):
    a = _rand(rng, (10, 14, 4))
    Image.fromarray(a, mode="RGBA").save(tmp_path / "a.png")
    rgb, info = read_image(tmp_path / "a.png")
    assert rgb.shape == (10, 14, 3)
    write_image(tmp_path / "b.png", rgb, info)
    out = Image.open(tmp_path / "b.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out), a)


def test_palette_with_and_without_transparency(tmp_path, rng):
    idx = _rand(rng, (8, 9)) % 4
    img = Image.fromarray(idx.astype(np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (256 * 3 - 12))
    img.save(tmp_path / "p.png")
    rgb, info = read_image(tmp_path / "p.png")
    assert info.alpha is None
    assert np.allclose(rgb[idx == 0], [1, 0, 0]) and np.allclose(rgb[idx == 2], [0, 0, 1])
    img.info["transparency"] = 1
    img.save(tmp_path / "pt.png", transparency=1)
    rgb, info = read_image(tmp_path / "pt.png")
    assert info.alpha is not None and np.all(info.alpha[idx == 1] == 0) and np.all(info.alpha[idx != 1] == 1)


def test_cmyk_jpeg_read_as_rgb(tmp_path):
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:, :8, 0] = 255  # cyan on the left half, white on the right
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=100)
    rgb, info = read_image(tmp_path / "c.jpg")
    assert rgb.shape == (16, 16, 3) and not info.grey
    left, right = rgb[:, :6].mean(axis=(0, 1)), rgb[:, 10:].mean(axis=(0, 1))
    assert left[0] < 0.2 and left[1] > 0.8 and left[2] > 0.8  # cyan = no red
    assert np.all(right > 0.9)


def test_exif_orientation_applied(tmp_path, rng):
    a = _rand(rng, (10, 20, 3))
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "o.jpg", exif=exif, quality=100)
    rgb, _ = read_image(tmp_path / "o.jpg")
    assert rgb.shape == (20, 10, 3)


@pytest.mark.parametrize("content,needle", [
    (b"", "empty file"),
    (b"this is not an image at all", "not an image"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, needle):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError) as exc:
        read_image(p)
    msg = str(exc.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_truncated_png(tmp_path, rng):
    Image.fromarray(_rand(rng, (64, 64, 3))).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_image(tmp_path / "t.png")


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def test_write_is_atomic_and_reports_bad_folder(tmp_path, rng):
    rgb = rng.random((8, 8, 3)).astype(np.float32)
    with pytest.raises(ImageError, match="output folder does not exist"):
        write_image(tmp_path / "missing" / "x.png", rgb)
    with pytest.raises(ImageError, match="unsupported output extension"):
        write_image(tmp_path / "x.xyz", rgb)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind


def test_written_files_get_normal_permissions(tmp_path, rng):
    import os

    write_image(tmp_path / "p.png", rng.random((4, 4, 3)).astype(np.float32))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == 0o666 & ~mask
