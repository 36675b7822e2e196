import jax
import numpy as np

from pqd_jax import models
from pqd_jax.train import start, steps, trainer


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _start(seed):
  return start.initial_state(
      models.ConvNet(num_classes=3, width=8, depth=2), (8, 8, 1),
      num_steps=10, optimizer="adamw", learning_rate=1e-3,
      weight_decay=0.0, warmup_steps=0, seed=seed)


def test_initial_state_is_a_function_of_the_seed():
  a, b, c = _start(0), _start(0), _start(1)
  assert _leaves_equal(a.state.params, b.state.params)
  assert not _leaves_equal(a.state.params, c.state.params)
  assert int(a.state.step) == 0


def test_the_seed_splits_into_init_and_step_keys():
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  run = _start(4)
  init_key, step_key = jax.random.split(jax.random.key(4))
  expected = steps.create_state(model, init_key, (8, 8, 1), run.tx)
  assert _leaves_equal(run.state.params, expected.params)
  np.testing.assert_array_equal(jax.random.key_data(run.rng),
                                jax.random.key_data(step_key))


def test_trainer_gathers_the_job_modules():
  from pqd_jax.train import evaluation, loop, student, teacher
  assert trainer.fit is loop.fit
  assert trainer.restore_variables is loop.restore_variables
  assert trainer.check_run_config is loop.check_run_config
  assert trainer.train_teacher is teacher.train_teacher
  assert trainer.train_student is student.train_student
  assert trainer.distilled_batches is student.distilled_batches
  assert trainer.steps_from_epochs is start.steps_from_epochs
  assert trainer.mean_std is evaluation.mean_std
  assert trainer.random_subset is evaluation.random_subset
  assert trainer.variables_of is steps.variables_of
