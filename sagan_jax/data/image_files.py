"""Images to score, read whole into memory: a folder of PNG/JPEG files (flat, or one subfolder per
class named by its integer label, as python -m sagan_jax.sample writes them) or an .npz with
``images`` (N, H, W, C) uint8 and optionally ``labels`` (N,).

No TensorFlow: another codebase's samples are read with PIL, exactly as saved (no resize, no
crop: images of another size than the reference are refused by the caller, named)."""

import os
from typing import NamedTuple

import numpy as np

from sagan_jax.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared lower-case: ImageNet's files end in .JPEG


def is_image_name(name: str) -> bool:
  """A visible file named like a JPEG or PNG (hidden names and macOS's ._* forks are not)."""
  return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


class ImageSet(NamedTuple):
  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray | None  # (N,) int32 when the set says each image's class
  source: str  # where they came from, for the metrics line


def _files(folder: str) -> list:
  return sorted(
    name for name in os.listdir(folder) if is_image_name(name) and os.path.isfile(os.path.join(folder, name))
  )


def _decode(path: str) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(path) as image:
      if image.mode not in ("L", "RGB"):
        image = image.convert("RGB" if "A" in image.mode or image.mode == "P" else "L")
      array = np.asarray(image, np.uint8)
  except (OSError, UnidentifiedImageError) as e:
    raise UserError(f"{path} does not decode as an image ({e}); remove it or replace it") from None
  return array[..., None] if array.ndim == 2 else array


def _read_folder(root: str) -> ImageSet:
  subfolders = sorted(
    d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
  )
  flat = _files(root)
  if subfolders and flat:
    raise UserError(
      f"{root} holds both images and subfolders ({subfolders[:3]}); put every image in one "
      f"subfolder per class (named by its label) or all of them in the folder itself"
    )
  if subfolders:
    if not all(d.isdigit() for d in subfolders):
      raise UserError(
        f"the subfolders of {root} must be named by their integer class label (as python -m "
        f"sagan_jax.sample writes them), got {[d for d in subfolders if not d.isdigit()][:3]}"
      )
    paths, labels = [], []
    for d in subfolders:
      names = _files(os.path.join(root, d))
      paths += [os.path.join(root, d, n) for n in names]
      labels += [int(d)] * len(names)
    labels = np.asarray(labels, np.int32)
  else:
    paths, labels = [os.path.join(root, n) for n in flat], None
  if not paths:
    raise UserError(f"{root} holds no .png/.jpg/.jpeg image")
  images = [_decode(p) for p in paths]
  shapes = sorted({image.shape for image in images})
  if len(shapes) > 1:
    first = next(p for p, image in zip(paths, images, strict=True) if image.shape == shapes[-1])
    raise UserError(
      f"the images of {root} differ in shape ({shapes[:4]}, e.g. {first}); score one size at a time"
    )
  return ImageSet(np.stack(images), labels, os.path.abspath(root))


def _read_npz(path: str) -> ImageSet:
  try:
    with np.load(path) as stored:
      if "images" not in stored:
        raise UserError(
          f"{path} has no 'images' array (it holds {sorted(stored.files)}); save the images as "
          f"np.savez(FILE, images=uint8 (N, H, W, C)[, labels=(N,)])"
        )
      images, labels = stored["images"], stored["labels"] if "labels" in stored else None
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is not a readable .npz ({e})") from None
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise UserError(
      f"{path}: 'images' must be uint8 (N, H, W, C) with C 1 or 3, got {images.dtype} {images.shape}"
    )
  if labels is not None and labels.shape != (len(images),):
    raise UserError(f"{path}: 'labels' must have shape ({len(images)},), got {labels.shape}")
  return ImageSet(images, None if labels is None else labels.astype(np.int32), os.path.abspath(path))


def read(path: str) -> ImageSet:
  """The images at ``path`` (a folder or an .npz), or one UserError saying what is wrong."""
  if not path or not os.path.exists(path):
    raise UserError(f"--images={path!r} does not exist; name a folder of images or an .npz")
  return _read_folder(path) if os.path.isdir(path) else _read_npz(path)
