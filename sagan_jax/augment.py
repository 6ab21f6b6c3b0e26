"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020).

The same random transforms go on real and generated images, in D's update and in G's, and
G's gradient flows through them, so D never sees an un-augmented image and G is not pushed
to generate augmented ones. Images are NHWC in [-1, 1]; each image draws its own transform.
Policies (DiffAugment's): 'color' (brightness, saturation, contrast), 'translation' (a
shift by up to 1/8 of the side, zero-padded), 'cutout' (a square of half the side set to 0).
"""

import jax
import jax.numpy as jnp

POLICIES = ("color", "translation", "cutout")


def _color(key, x):
  kb, ks, kc = jax.random.split(key, 3)
  per_image = lambda k: jax.random.uniform(k, (x.shape[0], 1, 1, 1), x.dtype)
  x = x + (per_image(kb) - 0.5)
  mean = jnp.mean(x, axis=3, keepdims=True)  # saturation: no-op on one channel
  x = (x - mean) * (per_image(ks) * 2) + mean
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (per_image(kc) + 0.5) + mean


def _translation(key, x, ratio: float = 0.125):
  b, h, w, c = x.shape
  ph, pw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (b,), -ph, ph + 1)
  dx = jax.random.randint(kx, (b,), -pw, pw + 1)
  padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  # out[y, x] = in[y - dy, x - dx]: the window of the padded image that starts at (ph - dy, pw - dx).
  shift = lambda image, oy, ox: jax.lax.dynamic_slice(image, (ph - oy, pw - ox, 0), (h, w, c))
  return jax.vmap(shift)(padded, dy, dx)


def _cutout(key, x, ratio: float = 0.5):
  b, h, w, _ = x.shape
  size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  # The square's centre, anywhere on the image (DiffAugment's range); it is clipped at the edges.
  cy = jax.random.randint(ky, (b, 1, 1, 1), 0, h + (1 - size_h % 2))
  cx = jax.random.randint(kx, (b, 1, 1, 1), 0, w + (1 - size_w % 2))
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  inside = (
    (rows >= cy - size_h // 2)
    & (rows < cy - size_h // 2 + size_h)
    & (cols >= cx - size_w // 2)
    & (cols < cx - size_w // 2 + size_w)
  )
  return jnp.where(inside, jnp.zeros((), x.dtype), x)


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def augment(key, images, policies):
  """``images`` with each policy applied in turn (in POLICIES' order), or as they are for ()."""
  unknown = sorted(set(policies) - set(POLICIES))
  if unknown:
    raise ValueError(f"augmentation policies {unknown} are not among {POLICIES}")
  for i, name in enumerate(p for p in POLICIES if p in policies):
    images = _TRANSFORMS[name](jax.random.fold_in(key, i), images)
  return images
