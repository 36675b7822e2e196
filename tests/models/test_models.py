import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import models


@pytest.fixture
def images():
  return jax.random.normal(jax.random.key(0), (4, 28, 28, 1))


def test_convnet_logits_shape(images):
  net = models.ConvNet(num_classes=10, width=16)
  variables = net.init(jax.random.key(1), images)
  assert net.apply(variables, images).shape == (4, 10)


def test_convnet_pad_to_32_gives_dc_feature_size(images):
  net = models.ConvNet(num_classes=10, width=16, pad_to=32)
  variables = net.init(jax.random.key(1), images)
  assert variables["params"]["head"]["kernel"].shape == (4 * 4 * 16, 10)


def test_instance_norm_is_per_image(images):
  net = models.ConvNet(num_classes=3, width=8)
  variables = net.init(jax.random.key(1), images)
  alone = net.apply(variables, images[:1])
  in_batch = net.apply(variables, images)[:1]
  np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-5)


def test_convnet_unknown_norm(images):
  with pytest.raises(ValueError, match="norm must be"):
    models.ConvNet(num_classes=3, norm="layer").init(jax.random.key(0),
                                                     images)


@pytest.mark.parametrize("stem,size", [("small", 28), ("imagenet", 64)])
def test_resnet18_logits_shape(stem, size):
  x = jnp.ones((2, size, size, 3))
  net = models.ResNet18(num_classes=7, width=8, stem=stem)
  variables = net.init(jax.random.key(0), x)
  assert net.apply(variables, x).shape == (2, 7)


def test_batchnorm_updates_statistics_in_train_mode_only():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3)) * 3 + 1
  net = models.ResNet18(num_classes=2, width=8, stem="small")
  variables = net.init(jax.random.key(1), x)
  _, updated = net.apply(variables, x, train=True, mutable=["batch_stats"])
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updated["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after,
                                                   strict=True))
  # Eval mode reads the running statistics and never writes them.
  _, same = net.apply(variables, x, train=False, mutable=["batch_stats"])
  for a, b in zip(before, jax.tree.leaves(same["batch_stats"]), strict=True):
    np.testing.assert_array_equal(a, b)


def test_resnet_eval_is_independent_of_the_batch():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  net = models.ResNet18(num_classes=2, width=8, stem="small")
  variables = net.init(jax.random.key(1), x)
  np.testing.assert_allclose(net.apply(variables, x[:1]),
                             net.apply(variables, x)[:1], rtol=1e-5,
                             atol=1e-5)
