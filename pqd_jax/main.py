"""Command line entry point: ``python -m pqd_jax.main --dataset=<name>``.

This file is kept short; the work lives in importable libraries. ``--dataset``
selects ``pqd_jax/configs/<name>.py``; any field can be overridden, e.g.
``--config.ipc=50 --config.quantize.weights=sqrt``.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DATASETS = ("fashion_mnist", "mnist", "cifar10", "imagenette", "imagenet2012",
            "folder")

flags.DEFINE_string("dataset", "fashion_mnist",
                    f"Which configuration to run, one of {DATASETS} "
                    "(folder:<root> for an image folder).")
flags.DEFINE_string("workdir", "",
                    "Where the artefacts go (default workdir/<dataset>); "
                    "running again resumes.")
flags.DEFINE_bool("retrain", False,
                  "Train the autoencoder, prior and teacher from scratch "
                  "instead of loading the checkpoints shipped in the package.")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs: host:port of process 0 (with "
                    "--num_processes and --process_id; one process per host).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: processes.")
flags.DEFINE_integer("process_id", None,
                     "Multi-process runs: this process's id, 0 writes.")
flags.DEFINE_bool("jax_distributed_auto", False,
                  "Let JAX find the cluster (TPU pods, SLURM, Open MPI).")
flags.DEFINE_bool("compilation_cache", True,
                  "Keep XLA's compiled programs in <workdir>/xla_cache (JAX's "
                  "persistent compilation cache), so that a run in the same "
                  "workdir (resumed, or with other settings) reuses them.")
flags.DEFINE_string("stages", "",
                    "Comma-separated subset of encode,quantize,decode,"
                    "relabel,train,eval (default: all).")


def _dataset_from_argv(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--dataset="):
      return arg.split("=", 1)[1]
    if arg == "--dataset" and i + 1 < len(argv):
      return argv[i + 1]
  return "fashion_mnist"


def use_compilation_cache(directory: str) -> None:
  """Makes JAX keep every program it compiles in ``directory``.

  Must run before the first compilation. A fresh process then loads the
  programs an earlier one compiled instead of compiling them again (the
  stream quantizer in a fresh process: about half its time, see
  ``benchmarks/RESULTS.md``).
  """
  import jax

  jax.config.update("jax_compilation_cache_dir", directory)
  # Every program: the pipeline's small per-batch steps compile in well
  # under JAX's default threshold of one second each, but there are many.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def summary(result, config) -> str:
  """The lines printed after a run: stage times and the students' accuracy.

  The ± is the sample standard deviation over seeds, as in ``results.json``
  and ``report.md``.
  """
  lines = ["", "stage times:"]
  for name, seconds in result.seconds.items():
    lines.append(f"  {name:<16}{seconds:>9.1f} s")
  for name in result.skipped:
    lines.append(f"  {name:<16}   cached")
  if result.accuracies:
    from pqd_jax.train import evaluation

    mean, std = evaluation.mean_std([100 * a for a in result.accuracies])
    lines.append(
        f"student accuracy: {mean:.2f} ± {std:.2f}% over "
        f"{len(result.accuracies)} seed(s) — {config.dataset}, "
        f"IPC {config.ipc}, "
        f"weights {config.quantize.weights} (student: "
        f"{config.student.weights}), strength {config.decode.strength}")
  lines.append(f"outputs: {result.workdir} (results.json, report.md, "
               "synthetic/)")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  """Runs the configured pipeline (absl entry point)."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}; flags are "
                     "--dataset, --workdir, --stages, --retrain, the "
                     "multi-process ones and --config.<field>.")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join("workdir", config.dataset)
  if flags.FLAGS.compilation_cache:
    use_compilation_cache(os.path.join(workdir, "xla_cache"))
  from pqd_jax import distributed

  distributed.initialize(flags.FLAGS.coordinator_address,
                         flags.FLAGS.num_processes, flags.FLAGS.process_id,
                         auto=flags.FLAGS.jax_distributed_auto)
  from pqd_jax import pipeline

  if flags.FLAGS.retrain:
    from pqd_jax import embedded

    for section, field in (("autoencoder", "pretrained"),
                           ("prior", "pretrained"),
                           ("teacher", "checkpoint")):
      if config[section][field] == embedded.EMBEDDED:
        config[section][field] = ""
  stages = tuple(s for s in flags.FLAGS.stages.split(",") if s)
  result = pipeline.run(config, workdir, stages=stages or pipeline.STAGES,
                        progress=distributed.is_coordinator(),
                        log=print if distributed.is_coordinator()
                        else lambda line: None)
  if distributed.is_coordinator():
    print(summary(result, config))


def _missing_field(error: BaseException) -> str:
  """The unknown field of ml_collections' error chain, with its hint."""
  messages = []
  while error is not None:
    if isinstance(error, KeyError) and error.args:
      messages.append(str(error.args[0]))
    error = error.__context__
  if not messages:
    return "(unknown)"
  hints = [m.split("\n", 1)[1] for m in messages if "\n" in m]
  return repr(messages[-1]) + (f" ({hints[0]})" if hints else "")


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses the flags, loading the --config file; a bad one is one line."""
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS.config.get("dataset")  # a config that failed to load raises
  except (AttributeError, KeyError) as e:
    sys.exit(f"error: a --config.<field> flag names a field the config does "
             f"not have: {_missing_field(e)}; the fields are those of the "
             "--config file.")
  except SyntaxError as e:
    sys.exit(f"error: --config file {e.filename}, line {e.lineno}: "
             f"{e.msg}.")
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except OSError as e:  # the file is missing or unreadable
    reason = str(e).strip().splitlines()[-1].strip()
    sys.exit(f"error: --config: cannot load the config file: {reason}")
  return rest


def run_main() -> None:
  """Console-script entry point (``pqd-jax``)."""
  os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
  dataset = _dataset_from_argv(sys.argv)
  name, _, arg = dataset.partition(":")
  if name not in DATASETS or (name == "folder") != bool(arg):
    sys.exit(f"error: unknown --dataset={dataset!r}; expected one of "
             f"{DATASETS[:-1]} or folder:<root>.")
  if name == "folder" and not os.path.isdir(arg):
    sys.exit(f"error: --dataset=folder:{arg}: no such directory (expected "
             "<root>/{train,test}/<class>/*.png).")
  default = os.path.join(_CONFIG_DIR, f"{name}.py") + (f":{arg}" if arg
                                                        else "")
  try:  # parses the --config and --config.<field> flags of sys.argv
    config_flags.DEFINE_config_file(
        "config", default,
        "Configuration file (default chosen by --dataset; a path to another "
        "config file works too).", lock_config=True)
  except (AttributeError, KeyError) as e:
    sys.exit(f"error: a --config.<field> flag names a field the config does "
             f"not have: {_missing_field(e)}; the fields are those of "
             f"{default}.")
  except (OSError, ValueError) as e:
    sys.exit(f"error: --config: {e}")
  try:
    app.run(main, flags_parser=_parse_flags)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  run_main()
