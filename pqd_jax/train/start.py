"""What a teacher or student run starts from: its length and initial state.

Both runs count their length the same way (steps, or epochs of
``ceil(n / batch)`` steps) and derive the initial parameters and the keys of
their steps from one seed, so that a run is reproducible from its arguments.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import optax

from pqd_jax.train import steps

__all__ = ["Start", "initial_state", "steps_from_epochs"]


def steps_from_epochs(num_steps: int | None, num_epochs: int | None,
                      num_examples: int, batch_size: int) -> int:
  """The step count given as steps or as epochs of ``ceil(n / batch)``.

  Raises:
    ValueError: unless exactly one of them is a positive integer.
  """
  if (num_steps is None) == (num_epochs is None):
    raise ValueError(f"Give exactly one of num_steps and num_epochs, got "
                     f"num_steps={num_steps!r}, num_epochs={num_epochs!r}.")
  if num_epochs is not None:
    if num_epochs < 1:
      raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")
    per_epoch = -(-num_examples // max(1, min(batch_size, num_examples)))
    return int(num_epochs) * per_epoch
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  return int(num_steps)


class Start(NamedTuple):
  """The beginning of a run.

  Attributes:
    tx: the optimizer.
    state: the initial state.
    rng: the base key of the steps (:func:`pqd_jax.train.loop.fit`'s
      ``rng``).
  """

  tx: optax.GradientTransformation
  state: steps.TrainState
  rng: jax.Array


def initial_state(model: nn.Module, image_shape: tuple[int, ...], *,
                  num_steps: int, optimizer: str, learning_rate: float,
                  weight_decay: float, warmup_steps: int, seed: int,
                  decay_norm_and_bias: bool = True) -> Start:
  """The optimizer, initial state and step key of a classifier run.

  ``key(seed)`` splits into the key of the initialisation and the base key
  of the steps.

  Args:
    model: the classifier.
    image_shape: ``(h, w, c)`` of one input image.
    num_steps: the run's length (the cosine decay ends there).
    optimizer: ``"adamw"`` or ``"sgd"``
      (:func:`pqd_jax.train.steps.make_optimizer`).
    learning_rate: peak learning rate.
    weight_decay: weight decay.
    warmup_steps: linear warm-up steps.
    seed: the run's seed.
    decay_norm_and_bias: whether weight decay also applies to norm scales
      and biases (False: kernels only).

  Returns:
    The optimizer, initial state and base key of the steps.
  """
  tx = steps.make_optimizer(optimizer, learning_rate, num_steps,
                            warmup_steps=warmup_steps,
                            weight_decay=weight_decay,
                            decay_norm_and_bias=decay_norm_and_bias)
  init_key, step_key = jax.random.split(jax.random.key(seed))
  return Start(tx, steps.create_state(model, init_key, image_shape, tx),
               step_key)
