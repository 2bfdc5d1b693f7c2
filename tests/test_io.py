"""hspace.io: finding, loading, converting and saving images (real files written with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hspace.io import (
    ImageLoadError,
    LoadedImages,
    find_images,
    load_image,
    load_images,
    save_image,
    to_pil,
    validate_images,
)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 using the library's own convention."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- find_images


def test_find_images_folder_sorted_filtered_and_files(tmp_path: Path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ["img10.png", "img2.JPG", "img1.jpeg", "b.webp", "a.bmp", "c.tiff", "notes.txt", ".hidden.png"]:
        if name.endswith(".txt"):
            (d / name).write_text("x")
        else:
            Image.fromarray(_rgb(4, 4)).save(d / name, format={"JPG": "JPEG", "JPEG": "JPEG"}.get(
                name.rsplit(".", 1)[1].upper(), None))
    (d / "sub").mkdir()
    Image.fromarray(_rgb(4, 4)).save(d / "sub" / "deep.png")
    extra = tmp_path / "extra.png"
    Image.fromarray(_rgb(4, 4)).save(extra)

    found = find_images([d, extra, d / "img2.JPG"])  # the duplicate is dropped
    assert [p.name for p in found] == ["a.bmp", "b.webp", "c.tiff", "img1.jpeg", "img2.JPG", "img10.png", "extra.png"]


def test_find_images_missing_and_empty(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        find_images([tmp_path / "nope.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="empty"):
        find_images([empty])
    with pytest.raises(ValueError, match="no input"):
        find_images([])


# ---------------------------------------------------------------- load_image: conversions


def test_rgb_png_exact_roundtrip_and_range(tmp_path: Path):
    arr = _rgb(16, 16)
    arr[0, 0] = [0, 0, 0]
    arr[0, 1] = [255, 255, 255]
    Image.fromarray(arr).save(tmp_path / "a.png")
    x, notices = load_image(tmp_path / "a.png", 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert notices == []
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    np.testing.assert_array_equal(_to_uint8(x), arr)
    np.testing.assert_array_equal(np.asarray(to_pil(x)), arr)
    # channel order is RGB
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (4, 4, 1))).save(tmp_path / "red.png")
    r, _ = load_image(tmp_path / "red.png", 4)
    assert torch.allclose(r[0], torch.ones(4, 4)) and torch.allclose(r[1:], -torch.ones(2, 4, 4))


def test_grayscale(tmp_path: Path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    x, notices = load_image(tmp_path / "g.png", 8)
    out = _to_uint8(x)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)
    assert len(notices) == 1 and "g.png" in notices[0] and "grayscale" in notices[0]


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    vals = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(vals).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # really a 16-bit file
    x, notices = load_image(tmp_path / "g16.png", 4)
    row = _to_uint8(x)[0, :, 0].astype(int)
    np.testing.assert_allclose(row, [0, 64, 128, 255], atol=1)  # clipping would give [0, 255, 255, 255]
    assert "16" in notices[0] or "65535" in notices[0]


def test_16bit_tiff(tmp_path: Path):
    vals = (np.linspace(0, 65535, 36).reshape(6, 6)).astype(np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.tif")
    x, _ = load_image(tmp_path / "g16.tif", 6)
    np.testing.assert_allclose(_to_uint8(x)[..., 1].astype(int), np.round(vals / 65535 * 255), atol=1)


def test_32bit_integer_mode_with_16bit_values(tmp_path: Path):
    vals = np.array([[0, 4096, 32768, 65535]], dtype=np.int32).repeat(4, axis=0)
    Image.fromarray(vals, mode="I").save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    x, _ = load_image(tmp_path / "i32.tif", 4)
    np.testing.assert_allclose(_to_uint8(x)[0, :, 2].astype(int), [0, 16, 128, 255], atol=1)


def test_rgba_composited_on_white(tmp_path: Path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255  # red
    arr[:2, :, 3] = 0  # top half fully transparent
    arr[2:, :, 3] = 255  # bottom half opaque
    arr[3, 3, 3] = 128  # one half-transparent pixel
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "rgba.png")
    x, notices = load_image(tmp_path / "rgba.png", 4)
    out = _to_uint8(x)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent -> white, not black
    np.testing.assert_array_equal(out[2, 0], [255, 0, 0])
    np.testing.assert_allclose(out[3, 3].astype(int), [255, 127, 127], atol=1)
    assert "white" in notices[0]


def test_palette_images(tmp_path: Path):
    arr = _rgb(8, 8, seed=3)
    p = Image.fromarray(arr).quantize(colors=16)
    assert p.mode == "P"
    p.save(tmp_path / "p.png")
    x, _ = load_image(tmp_path / "p.png", 8)
    np.testing.assert_array_equal(_to_uint8(x), np.asarray(p.convert("RGB")))
    # palette with a transparent index
    p.save(tmp_path / "pt.png", transparency=0)
    x2, notices = load_image(tmp_path / "pt.png", 8)
    idx = np.asarray(p)
    out = _to_uint8(x2)
    assert (idx == 0).any() and (idx != 0).any()
    np.testing.assert_array_equal(out[idx == 0], np.full(((idx == 0).sum(), 3), 255))
    np.testing.assert_array_equal(out[idx != 0], np.asarray(p.convert("RGB"))[idx != 0])
    assert "white" in notices[0]


def test_jpeg_loads_close(tmp_path: Path):
    arr = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    x, _ = load_image(tmp_path / "a.jpg", 16)
    np.testing.assert_allclose(_to_uint8(x).astype(int), arr.astype(int), atol=4)


# ---------------------------------------------------------------- resizing


def test_non_square_centre_crop_and_resize(tmp_path: Path):
    # 60 wide x 20 high: left third blue, middle third green, right third red
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20, 2] = 255
    arr[:, 20:40, 1] = 255
    arr[:, 40:, 0] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x, notices = load_image(tmp_path / "wide.png", 10)
    assert x.shape == (3, 10, 10)
    out = _to_uint8(x)
    assert (out[..., 1] > 240).all() and (out[..., 0] < 15).all() and (out[..., 2] < 15).all()  # only the centre
    assert len(notices) == 1
    for s in ("wide.png", "60x20", "20x20", "10x10"):
        assert s in notices[0]


def test_square_upscale_notice(tmp_path: Path):
    Image.fromarray(_rgb(8, 8)).save(tmp_path / "small.png")
    x, notices = load_image(tmp_path / "small.png", 32)
    assert x.shape == (3, 32, 32)
    assert "8x8" in notices[0] and "32x32" in notices[0]
    assert x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------- errors


def test_corrupt_and_truncated_files_raise_image_load_error(tmp_path: Path):
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    for name in ["garbage.png", "empty.jpg", "trunc.png", "trunc.jpg", "missing.png"]:
        with pytest.raises(ImageLoadError, match=name) as info:
            load_image(tmp_path / name, 8)
        assert isinstance(info.value, ValueError)
        assert info.value.reason and info.value.path.name == name


def test_bad_size():
    with pytest.raises(ValueError, match="size"):
        load_image("whatever.png", 0)


def test_load_images_keeps_going(tmp_path: Path):
    paths = []
    for i in range(4):
        Image.fromarray(_rgb(8 + 4 * i, 8, seed=i)).save(tmp_path / f"ok{i}.png")
        paths.append(tmp_path / f"ok{i}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    paths.insert(2, tmp_path / "bad.png")
    paths.append(tmp_path / "gone.png")
    res = load_images(paths, 8)
    assert isinstance(res, LoadedImages)
    assert res.images.shape == (4, 3, 8, 8)
    assert [p.name for p in res.paths] == ["ok0.png", "ok1.png", "ok2.png", "ok3.png"]
    assert [p.name for p, _ in res.failed] == ["bad.png", "gone.png"]
    assert res.num_requested == 6
    assert res.summary().startswith("4 of 6 images loaded; 2 failed")
    assert len(res.notices) == 3  # ok1..ok3 are non-square
    # row i really is file i
    first, _ = load_image(paths[0], 8)
    assert torch.equal(res.images[0], first)


def test_load_images_all_fail(tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    res = load_images([tmp_path / "bad.png"], 16)
    assert res.images.shape == (0, 3, 16, 16) and len(res) == 0 and len(res.failed) == 1


# ---------------------------------------------------------------- validation, to_pil, save_image


def test_validate_images_messages():
    good = torch.zeros(2, 3, 8, 8)
    assert validate_images(good) is good
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\[2, 4, 8, 8\]"):
        validate_images(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\[3, 8, 8\]"):
        validate_images(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*values in \[0, 255\].*127.5"):
        validate_images(torch.linspace(0, 255, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        validate_images(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="floating"):
        validate_images(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError):
        validate_images(np.zeros((1, 3, 2, 2)))


def test_to_pil_clamps_small_overshoot_rejects_wrong_convention():
    x = torch.zeros(3, 2, 2)
    x[0, 0, 0] = 1.2
    x[1, 0, 0] = -1.1
    img = to_pil(x)
    assert img.mode == "RGB" and img.size == (2, 2)
    assert img.getpixel((0, 0)) == (255, 0, 128)
    assert to_pil(x[None]).size == (2, 2)
    with pytest.raises(ValueError, match="values in"):
        to_pil(torch.full((3, 2, 2), 200.0))
    with pytest.raises(ValueError, match="batch"):
        to_pil(torch.zeros(2, 3, 2, 2))
    assert to_pil(torch.zeros(3, 2, 2, dtype=torch.bfloat16).requires_grad_()).getpixel((1, 1)) == (128, 128, 128)


def test_save_image_roundtrip(tmp_path: Path):
    arr = _rgb(12, 12, seed=7)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
    out = save_image(x, tmp_path / "sub" / "x.png")
    assert out.exists()
    with Image.open(out) as im:
        assert im.size == (12, 12)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), arr)
    y, _ = load_image(out, 12)
    assert torch.allclose(x, y, atol=1e-6)
    with pytest.raises(ValueError, match="extension"):
        save_image(x, tmp_path / "x.xyz")
