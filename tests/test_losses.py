import jax.numpy as jnp
import pytest

from sagan_jax import losses, programs


def test_hinge_losses_on_hand_computed_values():
  d_real = jnp.array([2.0, 0.5, -1.0])  # relu(1 - d): 0, 0.5, 2   -> mean 2.5/3
  d_fake = jnp.array([-2.0, 0.0, 1.5])  # relu(1 + d): 0, 1, 2.5   -> mean 3.5/3
  assert float(losses.hinge_d_loss(d_real, d_fake)) == pytest.approx(2.5 / 3 + 3.5 / 3)
  assert float(losses.hinge_g_loss(d_fake)) == pytest.approx(0.5 / 3)  # -mean(d_fake)


def test_unknown_loss_is_refused():
  with pytest.raises(ValueError, match="unknown loss"):
    losses.get_losses("wasserstein")


def test_sagan128_optimizers_are_the_papers():
  from configs import sagan128

  config = sagan128.get_config()
  o = config.optimizer
  assert (o.b1, o.b2, o.g_lr, o.d_lr) == (0.0, 0.9, 1e-4, 4e-4)
  assert config.d_steps_per_g_step == 1
  assert config.loss == "hinge"
  g_tx, d_tx = programs.build_optimizers(config)
  # the Adam hyper-parameters reach optax: one update of a unit gradient is -lr (β1=0).
  params = {"w": jnp.zeros(())}
  for tx, lr in ((g_tx, 1e-4), (d_tx, 4e-4)):
    update, _ = tx.update({"w": jnp.ones(())}, tx.init(params), params)
    assert float(update["w"]) == pytest.approx(-lr, rel=1e-4)
