"""From decoded or encoded images to model images: central square crop, resize to the model's
side (28×28 garments are padded to 32×32 instead), the random horizontal flip of training,
[-1, 1] float32 NHWC, the model's channel count (BigGAN/SAGAN's 128×128 ImageNet recipe)."""

import tensorflow as tf

from sagan_jax.errors import UserError


def _to_unit_range(images: tf.Tensor) -> tf.Tensor:
  return tf.cast(images, tf.float32) / 127.5 - 1.0


def to_model_images(images: tf.Tensor, resolution: int, channels: int) -> tf.Tensor:
  """uint8 (…, h, w, c) -> float32 (…, resolution, resolution, channels) in [-1, 1].

  28×28 digits/garments are padded (with their black background) to 32×32 rather
  than stretched; other sizes are resized with antialiasing.
  """
  h, w = images.shape[-3], images.shape[-2]
  if (h, w) == (28, 28) and resolution == 32:
    pad = [[0, 0]] * (len(images.shape) - 3) + [[2, 2], [2, 2], [0, 0]]
    x = tf.pad(_to_unit_range(images), pad, constant_values=-1.0)
  elif (h, w) != (resolution, resolution):
    # Resize, then scale: the scaling touches resolution² pixels instead of h·w (same result).
    x = _to_unit_range(tf.image.resize(images, (resolution, resolution), method="bilinear", antialias=True))
  else:
    x = _to_unit_range(images)
  c = x.shape[-1]
  if c != channels:
    if c == 1:
      x = tf.repeat(x, channels, axis=-1)
    elif c == 3 and channels == 1:
      x = tf.image.rgb_to_grayscale(x)
    elif c == 4:
      x = to_model_images(tf.cast(images[..., :3], tf.uint8), resolution, channels)
    else:
      raise UserError(f"cannot turn {c}-channel images into {channels} channels")
  return x


def central_square_crop(image: tf.Tensor) -> tf.Tensor:
  """The largest centred square of an (h, w, c) image; a static square passes untouched."""
  h, w = image.shape[-3], image.shape[-2]
  if h is not None and h == w:
    return image  # keeps the static shape, which to_model_images' 28->32 padding needs
  shape = tf.shape(image)
  h, w = shape[-3], shape[-2]
  side = tf.minimum(h, w)
  return tf.image.crop_to_bounding_box(image, (h - side) // 2, (w - side) // 2, side, side)


def preprocess(
  image: tf.Tensor, *, resolution: int, channels: int, flip_seed: tf.Tensor | None = None
) -> tf.Tensor:
  """uint8 (h, w, c) -> float32 (resolution, resolution, channels) in [-1, 1].

  With a flip_seed (training) the image is mirrored with probability 1/2, decided by the seed.
  """
  x = to_model_images(central_square_crop(image), resolution, channels)
  if flip_seed is not None:
    x = tf.image.stateless_random_flip_left_right(x, flip_seed)
  return x


def decode_and_preprocess(
  encoded: tf.Tensor, *, resolution: int, channels: int, flip_seed: tf.Tensor | None = None
) -> tf.Tensor:
  """Encoded JPEG/PNG bytes -> model image; grayscale and RGBA become `channels` in the decoder."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  return preprocess(image, resolution=resolution, channels=channels, flip_seed=flip_seed)


def flip_seed(config, position: tf.Tensor) -> tf.Tensor | None:
  if not config.dataset.random_flip:
    return None
  return tf.stack([tf.constant(config.seed, tf.int64), position])
