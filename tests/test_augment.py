"""DiffAugment's transforms: what each does to an image, that gradients pass through them, and
that the train step applies them to what D sees only when asked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax import augment


def _one_pixel_images(n, side=16):
  """n images in [-1, 1], each 0 but for one bright pixel at (5, 9)."""
  x = np.zeros((n, side, side, 1), np.float32)
  x[:, 5, 9] = 1.0
  return jnp.asarray(x)


def test_translation_moves_each_image_by_its_own_shift_within_an_eighth_and_pads_with_zeros():
  x = _one_pixel_images(64)
  out = np.asarray(augment.augment(jax.random.key(0), x, ("translation",)))
  shifts = set()
  for image in out:
    (ys, xs) = np.nonzero(image[..., 0])
    assert len(ys) == 1 and image[ys[0], xs[0], 0] == 1.0  # moved, not blurred; the rest is 0
    shifts.add((ys[0] - 5, xs[0] - 9))
  assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in shifts)  # 16 / 8 = 2 pixels
  assert len(shifts) > 10  # per image, not one shift for the batch
  edge = augment.augment(jax.random.key(1), jnp.ones((32, 16, 16, 1)), ("translation",))
  assert float(jnp.min(edge)) == 0.0 and float(jnp.max(edge)) == 1.0  # what comes in is zeros


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_edges():
  out = np.asarray(augment.augment(jax.random.key(0), jnp.ones((64, 16, 16, 1)), ("cutout",)))
  for image in out:
    rows, cols = np.nonzero(image[..., 0] == 0)
    assert len(rows) > 0
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
    assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
  assert sum(int((im == 0).sum()) == 64 for im in out) > 10  # mostly a full 8×8 square


def test_color_shifts_brightness_and_contrast_per_image():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, (32, 8, 8, 1)), jnp.float32)
  out = augment.augment(jax.random.key(0), x, ("color",))
  mean_shift = np.asarray(jnp.mean(out - x, axis=(1, 2, 3)))
  assert np.all(np.abs(mean_shift) <= 0.5 + 1e-6) and mean_shift.std() > 0.1
  spread = np.asarray(jnp.std(out, axis=(1, 2, 3)) / jnp.std(x, axis=(1, 2, 3)))
  assert np.all((spread >= 0.5 - 1e-5) & (spread <= 1.5 + 1e-5)) and spread.std() > 0.1


def test_gradients_pass_through_every_policy():
  """G learns through the augmentation: d(sum(aug(x) * w))/dx is what the transform keeps."""
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  policies = ("color", "translation", "cutout")
  grad = jax.grad(lambda a: jnp.sum(augment.augment(jax.random.key(3), a, policies)))(x)
  assert float(jnp.abs(grad).sum()) > 0
  # translation alone: each output pixel is one input pixel, so the gradient is 1 on the kept ones.
  g = jax.grad(lambda a: jnp.sum(augment.augment(jax.random.key(3), a, ("translation",))))(x)
  assert set(np.unique(np.asarray(g))) <= {0.0, 1.0} and float(g.mean()) > 0.6


def test_no_policy_is_the_identity_and_an_unknown_one_is_refused():
  x = _one_pixel_images(2)
  np.testing.assert_array_equal(np.asarray(augment.augment(jax.random.key(0), x, ())), np.asarray(x))
  with pytest.raises(ValueError, match="not among"):
    augment.augment(jax.random.key(0), x, ("rotation",))


def test_train_step_augments_what_d_sees_only_when_asked():
  """The same state and batch through the step without and with DiffAugment: D's outputs on the
  real images differ only with policies, and the step stays finite."""
  from configs import fashion_mnist
  from sagan_jax import programs, sharding

  mesh = sharding.create_mesh()
  config = fashion_mnist.get_config("smoke")
  shape = (1, config.batch_size, 32, 32, 1)
  images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  batch = sharding.global_batch({"image": images, "label": np.zeros(shape[:2], np.int32)}, mesh)
  results = {}
  for name, policies in (("none", ()), ("again", ()), ("diffaugment", ("translation", "cutout"))):
    config.augment = policies
    built = programs.programs(config, mesh)
    _, metrics = built.train_step(built.init(), batch)
    results[name] = {k: float(metrics[k]) for k in ("d_real", "d_fake", "g_loss")}
  assert all(np.isfinite(v) for r in results.values() for v in r.values())
  assert results["none"] == results["again"]  # deterministic: a difference is the augmentation's
  assert results["none"]["d_real"] != results["diffaugment"]["d_real"]


@pytest.mark.parametrize("policies", [("rotation",), ("translation", "blur")])
def test_config_refuses_unknown_policies(policies):
  from configs import fashion_mnist
  from sagan_jax import config as config_lib
  from sagan_jax.errors import UserError

  config = fashion_mnist.get_config("smoke")
  config.augment = policies
  with pytest.raises(UserError, match="augment .* must be a tuple of policies"):
    config_lib.validate_config(config)
