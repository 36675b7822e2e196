import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import models
from pqd_jax.data import formation
from pqd_jax.train import steps
from tests.conftest import run_on_fake_devices

AUG = (("flip", True), ("crop_scale", (0.5, 1.0)), ("cutmix", True))


def _setup(seed=0, norm="instance"):
  student = models.ConvNet(num_classes=3, width=8, depth=2, norm=norm)
  teacher = models.ConvNet(num_classes=3, width=8, depth=2)
  tvars = teacher.init(jax.random.key(99), jnp.zeros((1, 8, 8, 1)))
  tx = steps.make_optimizer("adamw", 3e-3, 100)
  state = steps.create_state(student, jax.random.key(seed), (8, 8, 1), tx)
  images = jax.random.normal(jax.random.key(1), (12, 8, 8, 1))
  batch = {"image": images, "weight": jnp.linspace(0.5, 1.5, 12),
           "label": jnp.arange(12) % 3}
  return student, teacher, tvars, tx, state, batch


def _kd(state, batch, rng, student, teacher, tvars, tx):
  return steps.kd_step(state, batch, rng, model=student, teacher=teacher,
                       teacher_variables=tvars, tx=tx, temperature=4.0,
                       aug=AUG)


def test_kd_step_is_pure():
  student, teacher, tvars, tx, _, batch = _setup()
  outs = []
  for _ in range(2):
    state = steps.create_state(student, jax.random.key(0), (8, 8, 1), tx)
    outs.append(_kd(state, batch, jax.random.key(7), student, teacher, tvars,
                    tx))
  (a, ma), (b, mb) = outs
  assert float(ma["loss"]) == float(mb["loss"])
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params),
                  strict=True):
    np.testing.assert_array_equal(x, y)


def test_kd_steps_reduce_the_loss_on_a_tiny_set():
  student, teacher, tvars, tx, state, batch = _setup()
  # The same views every step: the loss must go down.
  first = None
  for _ in range(30):
    state, m = _kd(state, batch, jax.random.key(3), student, teacher, tvars,
                   tx)
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.5 * first


def test_ce_steps_fit_hard_labels():
  student, _, _, tx, state, batch = _setup(norm="batch")
  for i in range(60):
    state, m = steps.ce_step(state, batch, jax.random.key(i), model=student,
                             tx=tx, aug=(("flip", False),
                                         ("crop_scale", None)))
  assert steps.accuracy(student, state, batch["image"], batch["label"]) == 1.0


@pytest.mark.parametrize("num_steps,warmup_steps", [(1, 0), (1, 5), (2, 0)])
def test_optimizer_accepts_schedules_shorter_than_warmup(num_steps,
                                                         warmup_steps):
  tx = steps.make_optimizer("adamw", 1e-3, num_steps,
                            warmup_steps=warmup_steps)
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
  assert np.isfinite(np.asarray(updates["w"])).all()


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="Unknown optimizer 'adam'"):
    steps.make_optimizer("adam", 1e-3, 10)


_SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from pqd_jax import sharding
from tests.train.test_steps import _setup, _kd
assert jax.device_count() == 4
outs = []
for devices in (jax.devices()[:1], jax.devices()):
  student, teacher, tvars, tx, state, batch = _setup()
  mesh = sharding.data_mesh(devices)
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  for i in range(3):
    state, m = _kd(state, batch, jax.random.key(i), student, teacher, tvars,
                   tx)
  outs.append(state)
one, four = (jax.tree.leaves(s.params) for s in outs)
for a, b in zip(one, four):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4,
                             atol=2e-5)
print("ok")
"""


def test_sharded_step_on_four_devices_matches_one():
  assert run_on_fake_devices(_SHARDED).strip().endswith("ok")


def test_unknown_augmentation_setting_is_refused():
  with pytest.raises(ValueError, match="'mixup'"):
    steps.check_aug((("flip", True), ("mixup", True)))


def test_unhashable_augmentation_settings_are_refused():
  with pytest.raises(ValueError, match="hashable"):
    steps.check_aug([("flip", True)])


def test_bad_crop_scale_is_refused():
  with pytest.raises(ValueError, match=r"crop_scale.*\(0\.5, 1\.5\)"):
    steps.check_aug((("crop_scale", (0.5, 1.5)),))


def test_unlisted_augmentations_are_off():
  student, _, _, tx, _, batch = _setup()
  views, weights = steps.augmented_views(
      jax.random.key(0), batch["image"], batch["weight"], steps.check_aug(()))
  np.testing.assert_array_equal(np.asarray(views), np.asarray(batch["image"]))
  np.testing.assert_array_equal(np.asarray(weights),
                                np.asarray(batch["weight"]))


def test_ce_step_with_dsa_fits_hard_labels():
  student, _, _, tx, state, batch = _setup(norm="batch")
  for i in range(80):
    state, _ = steps.ce_step(state, batch, jax.random.key(i), model=student,
                             tx=tx, aug=(("dsa", ("flip", "color")),))
  assert steps.accuracy(student, state, batch["image"], batch["label"]) == 1.0


def _assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.mark.parametrize("accumulate", [2, 4])
def test_kd_gradient_accumulation_is_the_large_batch_update(accumulate):
  student, teacher, tvars, tx, _, batch = _setup()
  states = []
  for acc in (1, accumulate):
    state = steps.create_state(student, jax.random.key(0), (8, 8, 1), tx)
    state, metrics = steps.kd_step(
        state, batch, jax.random.key(7), model=student, teacher=teacher,
        teacher_variables=tvars, tx=tx, temperature=4.0, aug=AUG,
        accumulate=acc)
    states.append((state, float(metrics["loss"])))
  (whole, loss), (pieces, loss_pieces) = states
  np.testing.assert_allclose(loss_pieces, loss, rtol=1e-5)
  _assert_trees_close(pieces.params, whole.params, rtol=1e-5, atol=1e-6)


def test_ce_gradient_accumulation_is_the_large_batch_update():
  student, _, _, tx, _, batch = _setup()
  states = []
  for acc in (1, 3):
    state = steps.create_state(student, jax.random.key(0), (8, 8, 1), tx)
    states.append(steps.ce_step(state, batch, jax.random.key(5),
                                model=student, tx=tx, aug=AUG,
                                accumulate=acc)[0])
  _assert_trees_close(states[1].params, states[0].params, rtol=1e-5,
                      atol=1e-6)


def test_without_norm_and_bias_decay_only_kernels_shrink():
  model = models.ConvNet(num_classes=3, width=4, depth=1)
  tx = steps.make_optimizer("adamw", 0.1, 10, weight_decay=0.5,
                            decay_norm_and_bias=False)
  state = steps.create_state(model, jax.random.key(0), (8, 8, 1), tx)
  params = jax.tree.map(lambda p: p + 1.0, state.params)  # biases non-zero
  state = state.replace(params=params, opt_state=tx.init(params))
  zero = jax.tree.map(jnp.zeros_like, params)  # only the decay moves them
  after = steps.apply_gradients(state, zero, tx).params
  pairs = zip(jax.tree_util.tree_leaves_with_path(params),
              jax.tree.leaves(after), strict=True)
  for (path, before), now in pairs:
    moved = not np.array_equal(np.asarray(before), np.asarray(now))
    assert moved == (before.ndim >= 2), jax.tree_util.keystr(path)


def test_a_mosaic_step_is_the_step_on_its_upsampled_tiles():
  # Factor 2: 3 stored 16x16 mosaics with per-tile weights train as the 12
  # tiles upsampled to 16x16 with those weights.
  student = models.ConvNet(num_classes=3, width=8, depth=2)
  teacher = models.ConvNet(num_classes=3, width=8, depth=2)
  tvars = teacher.init(jax.random.key(99), jnp.zeros((1, 16, 16, 1)))
  tx = steps.make_optimizer("adamw", 3e-3, 100)
  tiles = jax.random.normal(jax.random.key(1), (12, 8, 8, 1))
  weights = jnp.linspace(0.5, 1.5, 12)
  mosaics = jnp.asarray(formation.tile(np.asarray(tiles), 2))
  runs = []
  for batch, factor in (
      ({"image": mosaics, "weight": weights.reshape(3, 4)}, 2),
      ({"image": formation.split(mosaics, 2), "weight": weights}, 1)):
    state = steps.create_state(student, jax.random.key(0), (16, 16, 1), tx)
    state, _ = steps.kd_step(state, batch, jax.random.key(7), model=student,
                             teacher=teacher, teacher_variables=tvars, tx=tx,
                             temperature=4.0, aug=AUG, factor=factor)
    runs.append(state.params)
  _assert_trees_close(runs[0], runs[1], rtol=1e-6, atol=1e-7)


def test_label_log_probs_are_the_log_softmax_of_the_labels():
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  x = np.asarray(jax.random.normal(jax.random.key(0), (7, 8, 8, 1)))
  variables = model.init(jax.random.key(1), jnp.asarray(x[:1]))
  labels = np.array([0, 1, 2, 2, 1, 0, 1])
  logits = np.asarray(model.apply(variables, x, train=False), np.float64)
  expected = (logits[np.arange(7), labels]
              - np.log(np.exp(logits).sum(axis=1)))
  got = steps.label_log_probs(model, variables, x, labels, batch_size=4)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
