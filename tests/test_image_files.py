"""Hostile and unusual image files through `open_image` and the processor: each either becomes the RGB picture a
viewer shows or is refused with a `ValueError` naming the file."""

import io

import numpy as np
import PIL.Image
import pytest

from sam_hf import SamConfig, SamProcessor
from sam_hf.loading import MAX_IMAGE_PIXELS, open_image


def _save(tmp_path, image: PIL.Image.Image, name: str, **options) -> str:
    path = tmp_path / name
    image.save(path, **options)
    return str(path)


def test_one_pixel_image_is_processed(tmp_path):
    image = open_image(_save(tmp_path, PIL.Image.new("RGB", (1, 1), (10, 20, 30)), "dot.png"))
    inputs = SamProcessor.for_config(SamConfig())(images=image)
    assert inputs["original_sizes"].tolist() == [[1, 1]] and inputs["pixel_values"].shape == (1, 3, 1024, 1024)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(8, 8)
    path = _save(tmp_path, PIL.Image.fromarray(ramp), "depth.png")
    array = np.asarray(open_image(path))
    assert array.shape == (8, 8, 3)
    # PIL's own "I;16" -> "RGB" conversion clips everything above 255 to white; scaling keeps the ramp.
    assert (
        len(np.unique(array[..., 0])) == 64 and array[0, 0, 0] == 0 and array[-1, -1, 0] == 251
    )  # 63 * 1024 / 65535 * 255


def test_cmyk_and_palette_with_transparency(tmp_path):
    cmyk = open_image(_save(tmp_path, PIL.Image.new("CMYK", (5, 4), (0, 255, 255, 0)), "red.jpg"))
    assert cmyk.mode == "RGB" and cmyk.size == (5, 4) and np.asarray(cmyk)[0, 0, 0] > 200
    palette = PIL.Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    path = _save(tmp_path, palette, "sprite.png", transparency=0)
    assert np.asarray(open_image(path))[0, 0].tolist() == [0, 200, 0]


def test_exif_rotation_is_applied(tmp_path):
    image = PIL.Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white on the left
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    shown = open_image(_save(tmp_path, image, "phone.jpg", exif=exif, quality=95))
    assert shown.size == (20, 40)  # displayed upright, as viewers show it
    assert np.asarray(shown)[:10].mean() > 200 and np.asarray(shown)[-10:].mean() < 50


def test_animation_gives_its_first_frame(tmp_path):
    frames = [PIL.Image.new("RGB", (8, 8), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    path = str(tmp_path / "blink.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    array = np.asarray(open_image(path))
    assert array[..., 0].mean() > 200 and array[..., 2].mean() < 50


def test_truncated_and_fake_files_are_refused_by_name(tmp_path):
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ValueError, match=r"cut\.png"):
        open_image(tmp_path / "cut.png")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero\.png"):
        open_image(tmp_path / "zero.png")


def test_pixel_limit_refuses_bombs_before_decoding_and_can_be_raised(tmp_path):
    path = _save(tmp_path, PIL.Image.new("RGB", (30, 20)), "small.png")
    with pytest.raises(ValueError, match="max_pixels=500"):
        open_image(path, max_pixels=500)
    assert open_image(path, max_pixels=600).size == (30, 20)
    # A real bomb: a 1-bit PNG a few kB on disk that would decode to more pixels than the default limit.
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    bomb = _save(tmp_path, PIL.Image.new("1", (side, side)), "bomb.png")
    with pytest.raises(ValueError, match="more than max_pixels"):
        open_image(bomb)
