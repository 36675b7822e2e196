import json
import os
import threading
import time

import pytest

from pqd_jax import workdir
from tests.workdir.conftest import small_config as _config

STAGE = workdir.Stage("thing", "quantize", reads=("seed",),
                      outputs=("out.json",))


def _make(calls):
  def make(path, c):
    calls.append(c.seed)
    workdir.write_json(os.path.join(path, "out.json"), {"seed": c.seed})
  return make


def _workdir(tmp_path, **kw):
  return workdir.Workdir(str(tmp_path), steps=("quantize",),
                         log=lambda line: None, **kw)


def test_a_done_stage_is_skipped(tmp_path):
  calls = []
  first = _workdir(tmp_path).run(STAGE, _config(), _make(calls))
  wd = _workdir(tmp_path)
  second = wd.run(STAGE, _config(), _make(calls))
  assert calls == [0] and first == second and wd.skipped == ["thing"]


def test_a_changed_field_moves_the_old_artefact_aside(tmp_path):
  calls = []
  old = _workdir(tmp_path).run(STAGE, _config(), _make(calls))
  config = _config()
  config.seed = 1
  new = _workdir(tmp_path).run(STAGE, config, _make(calls))
  assert calls == [0, 1] and new.digest != old.digest
  aside = os.path.join(tmp_path, f"thing.{old.digest}")
  assert workdir.read_json(os.path.join(aside, "out.json")) == {"seed": 0}


def test_an_undeclared_field_does_not_change_the_digest(tmp_path):
  config = _config()
  wd = _workdir(tmp_path)
  before = wd.digest(STAGE, config)
  config.ipc = 50
  assert wd.digest(STAGE, config) == before


def test_the_data_fingerprint_enters_the_digest(tmp_path):
  stage = STAGE._replace(splits=("train",))
  a = _workdir(tmp_path, fingerprint=lambda s: "a").digest(stage, _config())
  b = _workdir(tmp_path, fingerprint=lambda s: "b").digest(stage, _config())
  assert a != b


def test_upstream_digests_enter_the_digest(tmp_path):
  wd = _workdir(tmp_path)
  up = lambda d: [workdir.Artefact("p", d)]
  assert wd.digest(STAGE, _config(), up("x")) != wd.digest(
      STAGE, _config(), up("y"))


@pytest.mark.parametrize("damage", ["empty stage.json", "missing output",
                                    "truncated output", "old format"])
def test_a_damaged_artefact_is_moved_aside_and_made_again(tmp_path, damage):
  calls, lines = [], []
  art = _workdir(tmp_path).run(STAGE, _config(), _make(calls))
  meta, out = (os.path.join(art.path, n) for n in ("stage.json", "out.json"))
  if damage == "empty stage.json":
    open(meta, "w").close()
  elif damage == "missing output":
    os.remove(out)
  elif damage == "truncated output":
    with open(out, "w") as f:
      f.write('{"se')
  else:
    with open(meta, "w") as f:
      json.dump({"hash": "abc"}, f)
  wd = workdir.Workdir(str(tmp_path), steps=("quantize",), log=lines.append)
  again = wd.run(STAGE, _config(), _make(calls))
  assert calls == [0, 0] and again == art
  assert workdir.read_json(out) == {"seed": 0}
  assert any("moved aside" in line for line in lines)
  assert len([d for d in os.listdir(tmp_path) if d.startswith("thing.")]) == 1


def test_a_killed_stage_resumes_in_its_directory(tmp_path):
  def killed(path, c):
    open(os.path.join(path, "partial"), "w").close()
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    _workdir(tmp_path).run(STAGE, _config(), killed)
  seen = []

  def resume(path, c):
    seen.append(os.listdir(path))
    _make([])(path, c)

  _workdir(tmp_path).run(STAGE, _config(), resume)
  assert "partial" in seen[0]
  assert not [d for d in os.listdir(tmp_path) if d.startswith("thing.")]


def test_a_needed_stage_that_was_not_requested_is_an_error(tmp_path):
  wd = workdir.Workdir(str(tmp_path), steps=("train",), log=lambda line: None)
  with pytest.raises(ValueError, match="'quantize' stage is needed"):
    wd.run(STAGE, _config(), _make([]))


def test_outputs_may_depend_on_the_config(tmp_path):
  stage = STAGE._replace(outputs=lambda c: (f"out{c.seed}.json",))
  calls = []
  _workdir(tmp_path).run(stage, _config(), _make(calls))
  _workdir(tmp_path).run(stage, _config(), _make(calls))
  assert calls == [0, 0]  # out0.json was never written: not done


def test_a_failed_check_makes_the_artefact_again(tmp_path):
  def make(path, c):
    _make([])(path, c)
    return {"expected": 1}

  seen = []

  def check(path, meta):
    seen.append(meta["record"])
    return "" if os.path.exists(os.path.join(path, "extra")) else "no extra"

  stage = STAGE._replace(check=check)
  first = _workdir(tmp_path).run(stage, _config(), make)
  open(os.path.join(first.path, "extra"), "w").close()
  wd = _workdir(tmp_path)
  wd.run(stage, _config(), make)
  assert wd.skipped == ["thing"] and seen == [{"expected": 1}]
  os.remove(os.path.join(first.path, "extra"))
  wd = _workdir(tmp_path)
  wd.run(stage, _config(), make)
  assert wd.skipped == [] and "thing" in wd.seconds


def test_inputs_enter_the_digest(tmp_path):
  stage = STAGE._replace(inputs=lambda c: (f"weights-{c.ipc}",))
  config = _config()
  before = _workdir(tmp_path).digest(stage, config)
  config.ipc = 11
  assert _workdir(tmp_path).digest(stage, config) != before


def test_two_runs_sharing_a_workdir_make_an_artefact_once(tmp_path):
  calls, started = [], threading.Event()

  def slow(path, c):
    started.set()
    time.sleep(0.5)
    _make(calls)(path, c)

  results = []
  first = threading.Thread(target=lambda: results.append(
      _workdir(tmp_path).run(STAGE, _config(), slow)))
  first.start()
  started.wait()
  second = _workdir(tmp_path).run(STAGE, _config(), slow)
  first.join()
  assert calls == [0] and results == [second]


def test_a_cached_artefact_is_read_where_no_lock_can_be_had(tmp_path):
  calls = []
  _workdir(tmp_path).run(STAGE, _config(), _make(calls))
  lock = tmp_path / ".thing.lock"
  lock.unlink()
  lock.mkdir()  # cannot be opened as the lock file
  wd = _workdir(tmp_path)
  wd.run(STAGE, _config(), _make(calls))
  assert calls == [0] and wd.skipped == ["thing"]
