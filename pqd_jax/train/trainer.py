"""The training entry points in one namespace.

Each job lives in its own module; this one gathers what users of the
trainer call:

* :mod:`pqd_jax.train.loop`: the resumable loop ``fit`` with orbax
  checkpoints, ``restore_variables`` and ``check_run_config``;
* :mod:`pqd_jax.train.teacher`: ``train_teacher`` on a real split;
* :mod:`pqd_jax.train.student`: ``train_student`` on a weighted distilled
  set and its batches ``distilled_batches``;
* :mod:`pqd_jax.train.start`: ``steps_from_epochs``, the run length both
  count;
* :mod:`pqd_jax.train.evaluation`: the ``random_subset`` baseline and
  ``mean_std`` over seeds;
* :mod:`pqd_jax.train.steps`: ``variables_of`` a trained state.
"""

from pqd_jax.train.evaluation import mean_std, random_subset
from pqd_jax.train.loop import check_run_config, fit, restore_variables
from pqd_jax.train.start import steps_from_epochs
from pqd_jax.train.steps import variables_of
from pqd_jax.train.student import distilled_batches, train_student
from pqd_jax.train.teacher import train_teacher

__all__ = [
    "check_run_config",
    "distilled_batches",
    "fit",
    "mean_std",
    "random_subset",
    "restore_variables",
    "steps_from_epochs",
    "train_student",
    "train_teacher",
    "variables_of",
]
