"""Image reading and writing, and where a batch of inputs and outputs is (:func:`expand_inputs`,
:func:`plan_outputs`).

Every image enters the library as float32 RGB in [0, 1] with shape (H, W, 3), plus an
:class:`ImageInfo` that remembers what the file was (bit depth, grey or colour, alpha) so the
output can be written back the same way. Supported: PNG, JPEG, TIFF, WebP, BMP; 8- and 16-bit;
grey, grey+alpha, RGB, RGBA, palette (with or without transparency), CMYK JPEG; EXIF orientation
is applied on read, and the rest of the EXIF block is written back (JPEG, PNG, WebP, TIFF outputs).
Writes are atomic (temporary file + rename), and never touch the input.
"""
from __future__ import annotations

import glob
import io as _io
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, OutputError
from .png16 import decode_png16, encode_png16, png_chunk, png_header

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
# Pillow refuses images above ~179 MP by default as a decompression-bomb guard; real photos from
# 100+ MP sensors exist, so allow up to 1 gigapixel explicitly (a named constant, not a global switch).
MAX_PIXELS = 1_000_000_000
# zlib level of PNG outputs: 1 (OpenCV's default) writes a 720p frame ~7x faster than Pillow's 6
# (0.05 s vs 0.35 s on the project's CPU) for ~15% larger files; PNG stays lossless at every level.
PNG_LEVEL = 1
EXIF_PREFIX = b"Exif\x00\x00"  # how Pillow's JPEG and PNG plugins hold an EXIF block (a WebP's lacks it)
EXIF_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")  # the output formats the EXIF block is written to


@dataclass(frozen=True)
class ImageInfo:
    """What an input file was, so that the output can match it.

    grey: the source had one colour channel. bit_depth: 8 or 16. alpha: (H, W) float32 in [0, 1]
    or None. format: Pillow format name of the source (e.g. "PNG"). exif: the source's EXIF block
    (``Exif\\0\\0`` + TIFF data, its orientation tag already applied and removed) or None.
    """

    grey: bool = False
    bit_depth: int = 8
    alpha: np.ndarray | None = None
    format: str = "PNG"
    exif: bytes | None = None


def exif_block(data: bytes | None) -> bytes | None:
    """An EXIF block as :class:`ImageInfo` keeps it: with the ``Exif\\0\\0`` prefix; None when absent or empty."""
    if not data:
        return None
    return data if data.startswith(EXIF_PREFIX) else EXIF_PREFIX + data


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def decode_pillow(img: Image.Image) -> tuple[np.ndarray, ImageInfo]:
    """A Pillow image of any mode as :func:`read_image` returns a file: float32 RGB (H, W, 3) in [0, 1] and its
    :class:`ImageInfo` (EXIF orientation applied)."""
    return _from_pillow(img, "")


def _from_pillow(img: Image.Image, path: str) -> tuple[np.ndarray, ImageInfo]:
    fmt = img.format or "PNG"
    img = ImageOps.exif_transpose(img)  # its EXIF block loses the orientation tag it applied
    # a TIFF's tags are its own structure, not an EXIF block to copy: only a block the format carries apart
    exif = exif_block(img.info.get("exif")) if fmt != "TIFF" else None
    mode = img.mode
    alpha = None
    grey = False
    bit_depth = 8
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        bit_depth = 16 if scale > 255 else 8
        grey_plane = (arr / scale).astype(np.float32)
        rgb = np.repeat(grey_plane[:, :, None], 3, axis=2)
        return np.clip(rgb, 0, 1), ImageInfo(True, bit_depth, None, fmt, exif)
    if mode == "F":
        plane = np.asarray(img, dtype=np.float32)
        return np.repeat(np.clip(plane, 0, 1)[:, :, None], 3, axis=2), ImageInfo(True, 16, None, fmt, exif)
    if mode in ("1", "L", "LA", "La"):
        grey = True
        if mode in ("LA", "La"):
            alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        img = img.convert("L").convert("RGB")
    elif mode in ("RGBA", "RGBa"):
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        img = img.convert("RGB")
    elif mode != "RGB":  # CMYK, YCbCr, LAB, HSV: Pillow knows the conversion to RGB
        img = img.convert("RGB")
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    return rgb, ImageInfo(grey, bit_depth, alpha, fmt, exif)


def _from_png16(data: bytes) -> tuple[np.ndarray, ImageInfo]:
    arr = decode_png16(data).astype(np.float32) / 65535.0
    channels = arr.shape[2]
    alpha = arr[:, :, -1].copy() if channels in (2, 4) else None
    colour = arr[:, :, : (1 if channels <= 2 else 3)]
    grey = colour.shape[2] == 1
    rgb = np.repeat(colour, 3, axis=2) if grey else colour
    return np.ascontiguousarray(rgb), ImageInfo(grey, 16, alpha, "PNG", exif_block(png_chunk(data, b"eXIf")))


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as float32 RGB in [0, 1], shape (H, W, 3), plus its :class:`ImageInfo`.

    Raises ImageError with a one-line message naming the file for anything unreadable.
    """
    p = str(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{p}: empty file (0 bytes)")
    header = png_header(data)
    try:
        if header is not None and header[2] == 16 and header[3] in (2, 4, 6) and not header[4]:
            rgb, info = _from_png16(data)
        else:
            with Image.open(_io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{p}: image too large ({img.width}x{img.height})")
                if img.format == "TIFF" and img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F"):
                    raise ImageError(f"{p}: unsupported TIFF pixel mode {img.mode}")
                img.load()
                rgb, info = _from_pillow(img, p)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image file (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{p}: truncated or corrupt image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"{p}: image has zero size")
    return rgb, info


def _format_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {
        ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
        ".webp": "WEBP", ".bmp": "BMP",
    }.get(ext, "")


ENCODE_ROWS = 256  # rows converted at once when encoding (bounds the float temporaries of a large image)


def _quantise(rgb: np.ndarray, grey: bool, alpha: np.ndarray | None, dtype: type) -> np.ndarray:
    """Float RGB (H, W, 3) -> integer planes (H, W, C) of ``dtype`` (uint8 or uint16): NaN -> 0, clipped
    to [0, 1], grey = the mean of the channels, alpha appended, rounded to the type's full scale.
    Converted a band of rows at a time, so a 24 MP image needs no full-size float temporaries."""
    scale = float(np.iinfo(dtype).max)
    h, w = rgb.shape[:2]
    out = np.empty((h, w, (1 if grey else 3) + (alpha is not None)), dtype)
    for r0 in range(0, h, ENCODE_ROWS):
        band = np.clip(np.nan_to_num(np.asarray(rgb[r0:r0 + ENCODE_ROWS], dtype=np.float32)), 0.0, 1.0)
        if grey:
            band = band.mean(axis=2, keepdims=True)
        if alpha is not None:
            band = np.concatenate([band, alpha[r0:r0 + ENCODE_ROWS, :, None]], axis=2)
        out[r0:r0 + ENCODE_ROWS] = np.round(band * scale)
    return out


def encode_image(rgb: np.ndarray, info: ImageInfo | None, fmt: str) -> bytes:
    """Encode float RGB (H, W, 3) in [0, 1] to file bytes of format ``fmt``, matching ``info``.

    16-bit depth is kept for PNG (grey and colour) and TIFF (grey); alpha is re-attached where the
    format supports it (PNG, TIFF, WebP); grey sources are written grey; the EXIF block is written to
    JPEG, PNG, WebP and TIFF files.
    """
    info = info or ImageInfo()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    alpha = info.alpha
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        alpha = None  # the output has another size (e.g. super-resolution): drop the alpha plane
    keep_alpha = alpha is not None and fmt in ("PNG", "TIFF", "WEBP")
    sixteen = info.bit_depth == 16 and fmt in ("PNG", "TIFF")
    exif = {"exif": info.exif} if info.exif and fmt in EXIF_FORMATS else {}
    buf = _io.BytesIO()
    if sixteen and fmt == "PNG":
        return encode_png16(_quantise(rgb, info.grey, alpha if keep_alpha else None, np.uint16), PNG_LEVEL,
                            exif=info.exif[len(EXIF_PREFIX):] if exif else None)  # a PNG's eXIf chunk: no prefix
    if sixteen and info.grey and not keep_alpha:
        Image.fromarray(_quantise(rgb, True, None, np.uint16)[:, :, 0]).save(buf, format=fmt, **exif)
        return buf.getvalue()
    a8 = _quantise(rgb, info.grey, alpha if keep_alpha else None, np.uint8)
    img = Image.fromarray(a8[:, :, 0] if a8.shape[2] == 1 else a8)
    if fmt == "JPEG":
        img.save(buf, format=fmt, quality=95, subsampling=0, **exif)
    elif fmt == "WEBP":
        img.save(buf, format=fmt, lossless=True, **exif)
    elif fmt == "PNG":
        img.save(buf, format=fmt, compress_level=PNG_LEVEL, **exif)
    else:
        img.save(buf, format=fmt, **exif)
    return buf.getvalue()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) for writing; a one-line OutputError when it
    cannot be created or is not writable (a file in the way, a read-only file system)."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise OutputError(f"{d}: cannot create output folder (a file of that name is in the way)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{d}: cannot create output folder ({exc.strerror or exc})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"{d}: output folder is not writable")
    try:  # a file made and removed: the only test that also holds for root and special file systems
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{d}: output folder is not writable ({exc.strerror or exc})") from None
    return d


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (absolute paths)."""
    missing = []
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; the others are left as they are."""
    for d in folders:
        try:
            d.rmdir()  # fails, harmlessly, on a folder that is not empty
        except OSError:
            continue


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`output_dir` for a ``with`` block that writes into ``path``: the folders it had to
    create (``path`` and missing parents) are removed at the end when nothing was written into them,
    so that a failed run leaves no empty folder behind. Folders that existed before are never removed."""
    created = missing_folders(path)
    try:
        yield output_dir(path)
    finally:
        remove_empty_folders(created)


def names_image_file(output: str | os.PathLike) -> bool:
    """Whether the output name ``output`` names one image file (True) or a folder (False).

    A folder: an existing folder, a name ending in a path separator, or a name without extension.
    A file: a name with an image extension (its format follows the extension). Any other extension
    (``out.gif``, ``out.xyz``) is an OutputError listing the formats written, rather than a folder
    silently made under that name."""
    text = os.fspath(output)
    p = Path(text)
    if p.is_dir() or text.endswith(tuple(s for s in (os.sep, os.altsep) if s)) or not p.suffix:
        return False
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    raise OutputError(f"{text}: cannot write '{p.suffix}' images; outputs are written as "
                      f"{', '.join(IMAGE_EXTENSIONS)} (a name without extension, or ending in '/', is a folder)")


def expand_inputs(items: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Files, folders and globs -> (image paths, error lines), in the order given.

    A folder gives its image files (:data:`IMAGE_EXTENSIONS`, directly in it, sorted by name); a glob
    (``*``, ``?``, ``[``; ``**`` recursive) the files it matches, sorted; an existing file itself (its
    format is checked when it is read). A missing file, a glob matching nothing or a folder without
    images gives one error line naming it, and the other items are still expanded."""
    paths: list[Path] = []
    errors: list[str] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
            if not found:
                errors.append(f"{text}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif p.exists():
            paths.append(p)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(text, recursive=True) if os.path.isfile(q))
            if not found:
                errors.append(f"{text}: no file matches")
            paths += found
        else:
            errors.append(f"{text}: file not found")
    return paths, errors


def output_path(src: str | os.PathLike, out: str | os.PathLike, to_file: bool) -> Path:
    """Where ``src`` is written: ``out`` itself when it names the one output file, else ``out/NAME``
    (the input's file name, so its format too)."""
    return Path(out) if to_file else Path(out) / Path(src).name


@dataclass(frozen=True)
class OutputPlan:
    """Where each input of a batch is written (:func:`plan_outputs`).

    ``jobs``: (input, output) paths in input order; ``folder``: the folder the outputs go in (to create
    with :func:`output_folder`); ``to_file``: the output names the one output file; ``errors``: one
    line per input (or item) that gets no output."""

    jobs: tuple[tuple[Path, Path], ...]
    folder: Path
    to_file: bool
    errors: tuple[str, ...]


def plan_outputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> OutputPlan:
    """Expand ``inputs`` (:func:`expand_inputs`) and name each one's output in ``output``.

    ``output`` is a folder (outputs keep their input's file name) or, for exactly one input file, an
    image file name (:func:`names_image_file`); an image file name for several inputs, a folder or a
    glob is a one-line OutputError, as is an unsupported extension. Nothing is ever written over an
    input: such an input gets an error line instead of a job, as does each input whose output name is
    already taken by an earlier input of the batch (``a/x.png b/x.png -o out``); an input given twice
    is done once. Nothing is created here."""
    to_file = names_image_file(output)
    paths, errors = expand_inputs(inputs)
    out = Path(output)
    single = len(paths) == 1 and len(inputs) == 1 and Path(inputs[0]).is_file()
    if to_file and not single:
        raise OutputError(f"{out}: an image file name, but the inputs are {len(paths)} images or a folder/glob; "
                          f"give an output folder")
    resolved_inputs = {p.resolve() for p in paths}
    taken: dict[Path, Path] = {}  # resolved output -> its input
    jobs: list[tuple[Path, Path]] = []
    for src in paths:
        dest = output_path(src, out, to_file)
        key = dest.resolve()
        if key in taken:
            if taken[key].resolve() != src.resolve():
                errors.append(f"{src}: output {dest} is also the output of {taken[key]}; "
                              f"give inputs of the same name separate output folders")
            continue
        if key in resolved_inputs:
            errors.append(f"{src}: output {dest} would overwrite an input; choose another output folder")
            continue
        taken[key] = src
        jobs.append((src, dest))
    return OutputPlan(tuple(jobs), out.parent if to_file else out, to_file, tuple(errors))


def check_output_file(path: str | os.PathLike, extensions: tuple[str, ...]) -> Path:
    """``path`` as a Path if it can name an output file: not a folder, ending in one of
    ``extensions``; else a one-line OutputError. Its folder is checked by :func:`output_folder`."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; give a file name ending in {' or '.join(extensions)}")
    if p.suffix.lower() not in extensions:
        raise OutputError(f"{p}: the output file name must end in {' or '.join(extensions)}")
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same folder and an atomic rename."""
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(p)[-16:], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image(path: str | os.PathLike, rgb: np.ndarray, info: ImageInfo | None = None) -> None:
    """Atomically write float RGB (H, W, 3) in [0, 1] to ``path``; the format follows the extension."""
    p = os.fspath(path)
    fmt = _format_for(p)
    if not fmt:
        raise ImageError(f"{p}: unsupported output extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise ImageError(f"{p}: output folder does not exist")
    try:
        atomic_write_bytes(p, encode_image(rgb, info, fmt))
    except PermissionError:
        raise ImageError(f"{p}: output folder is not writable") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot write ({exc.strerror or exc})") from None


def to_tensor(rgb: np.ndarray):
    """(H, W, 3) float32 array in [0, 1] -> (1, 3, H, W) float32 tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0).float()


def to_numpy(tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor -> (H, W, 3) float32 array clipped to [0, 1]."""
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    return np.clip(t.permute(1, 2, 0).numpy(), 0.0, 1.0)
