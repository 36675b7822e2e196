import json
import os
import pickle
import shutil

import numpy as np
import pytest

from pqd_jax import workdir


def test_append_jsonl_keeps_a_row_after_a_line_cut_by_a_kill(tmp_path):
  path = str(tmp_path / "rows.jsonl")
  workdir.append_jsonl(path, {"a": 1})
  with open(path, "a") as f:
    f.write('{"cut": ')
  workdir.append_jsonl(path, {"b": 2})
  assert workdir.read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path):
  assert workdir.read_jsonl(str(tmp_path / "none.jsonl")) == []


def test_read_jsonl_skips_lines_that_are_not_objects(tmp_path):
  path = tmp_path / "rows.jsonl"
  path.write_text('[1, 2]\n"x"\n{"a": 1}\n')
  assert workdir.read_jsonl(str(path)) == [{"a": 1}]


def test_write_npz_leaves_no_temporary_file(tmp_path):
  path = str(tmp_path / "a.npz")
  workdir.write_npz(path, x=np.arange(3))
  assert os.listdir(tmp_path) == ["a.npz"]
  with np.load(path) as f:
    np.testing.assert_array_equal(f["x"], np.arange(3))


def test_a_failed_write_keeps_the_old_file(tmp_path):
  path = str(tmp_path / "a.json")
  workdir.write_json(path, {"old": 1})
  with pytest.raises(TypeError):
    workdir.write_json(path, {"new": object()})
  assert workdir.read_json(path) == {"old": 1}


def test_save_atomic_keeps_the_extension_for_the_writer(tmp_path):
  seen = []
  workdir.save_atomic(str(tmp_path / "grid.png"),
                      lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
  assert seen[0].endswith(".png") and os.listdir(tmp_path) == ["grid.png"]


def test_atomic_directory_keeps_the_old_one_on_error(tmp_path):
  path = str(tmp_path / "d")
  with workdir.atomic_directory(path) as tmp:
    open(os.path.join(tmp, "x"), "w").close()
  with pytest.raises(RuntimeError):
    with workdir.atomic_directory(path) as tmp:
      raise RuntimeError
  assert os.listdir(path) == ["x"]


@pytest.mark.parametrize("cut", [0, 10, -10])
def test_a_truncated_npz_is_not_readable(tmp_path, cut):
  path = str(tmp_path / "a.npz")
  workdir.write_npz(path, x=np.arange(1000))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:cut] if cut >= 0 else data[:len(data) // 2] + data[cut:])
  assert workdir.readable(path) is False


def test_an_npy_cut_short_is_not_readable(tmp_path):
  path = tmp_path / "a.npy"
  np.save(path, np.zeros(1000))
  assert workdir.readable(str(path))
  path.write_bytes(path.read_bytes()[:500])
  assert not workdir.readable(str(path))


def test_tree_stats_change_with_a_file_and_not_with_the_place(tmp_path):
  (tmp_path / "a" / "sub").mkdir(parents=True)
  (tmp_path / "a" / "sub" / "w.bin").write_bytes(b"1234")
  before = workdir.tree_stats(str(tmp_path / "a"))
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  assert workdir.tree_stats(str(tmp_path / "b")) == before
  (tmp_path / "a" / "sub" / "w.bin").write_bytes(b"12345")
  assert workdir.tree_stats(str(tmp_path / "a")) != before
  assert workdir.tree_stats("org/model-on-a-hub") == ""


def test_readable_files_and_directories(tmp_path):
  (tmp_path / "empty.json").write_text("")
  (tmp_path / "ok.json").write_text("{}")
  (tmp_path / "dir").mkdir()
  assert not workdir.readable(str(tmp_path / "empty.json"))
  assert workdir.readable(str(tmp_path / "ok.json"))
  assert not workdir.readable(str(tmp_path / "dir"))  # empty
  assert not workdir.readable(str(tmp_path / "missing"))


def test_read_rows_of_an_npy_file(tmp_path):
  a = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
  np.save(tmp_path / "a.npy", a)
  layout = workdir.array_layout(str(tmp_path / "a.npy"))
  assert layout.shape == (5, 3, 4) and layout.dtype == np.float32
  np.testing.assert_array_equal(workdir.read_rows(layout, 1, 4), a[1:4])
  assert workdir.read_rows(layout, 2, 2).shape == (0, 3, 4)


def test_read_rows_into_a_given_array(tmp_path):
  a = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
  np.save(tmp_path / "a.npy", a)
  layout = workdir.array_layout(str(tmp_path / "a.npy"))
  out = np.zeros((6, 3, 4), np.float32)
  workdir.read_rows(layout, 1, 4, out=out[2:5])
  np.testing.assert_array_equal(out[2:5], a[1:4])
  assert not out[[0, 1, 5]].any()  # nothing written outside


def _read_only(a):
  a.flags.writeable = False
  return a


@pytest.mark.parametrize("out,message", [
    (np.zeros((2, 3, 4), np.float32),
     r"out must be a float32 array of shape \(3, 3, 4\), got float32 "
     r"\(2, 3, 4\)"),
    (np.zeros((3, 3, 4), np.float64), r"got float64 \(3, 3, 4\)"),
    (np.zeros((3, 3, 8), np.float32)[..., ::2], r"a strided array"),
    (_read_only(np.zeros((3, 3, 4), np.float32)), r"a read-only array"),
])
def test_read_rows_into_an_unfit_array_is_refused(tmp_path, out, message):
  np.save(tmp_path / "a.npy", np.zeros((5, 3, 4), np.float32))
  layout = workdir.array_layout(str(tmp_path / "a.npy"))
  with pytest.raises(ValueError, match=message):
    workdir.read_rows(layout, 1, 4, out=out)


def test_read_rows_of_an_npz_member(tmp_path):
  a, b = np.arange(12).reshape(4, 3), np.ones((2, 2), np.float16)
  workdir.write_npz(str(tmp_path / "a.npz"), a=a, b=b)
  for name, arr in (("a", a), ("b", b)):
    layout = workdir.array_layout(str(tmp_path / "a.npz"), name)
    np.testing.assert_array_equal(workdir.read_rows(layout, 1, 2), arr[1:2])


def test_array_layout_names_a_missing_member_or_a_cut_file(tmp_path):
  workdir.write_npz(str(tmp_path / "a.npz"), a=np.zeros(3))
  with pytest.raises(ValueError, match="'b'.*a.npz"):
    workdir.array_layout(str(tmp_path / "a.npz"), "b")
  np.save(tmp_path / "c.npy", np.zeros((100, 10)))
  cut = tmp_path / "c.npy"
  cut.write_bytes(cut.read_bytes()[:-80])
  with pytest.raises(ValueError, match="c.npy: cut short"):
    workdir.array_layout(str(cut))


def test_read_rows_outside_the_array_is_an_index_error(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((3, 2)))
  layout = workdir.array_layout(str(tmp_path / "a.npy"))
  with pytest.raises(IndexError, match=r"\[2, 4\)"):
    workdir.read_rows(layout, 2, 4)


def _half(path):
  os.truncate(path, os.path.getsize(path) // 2)


def test_reading_names_the_file_the_reason_and_the_advice():
  with pytest.raises(workdir.UnreadableFileError) as info:
    with workdir.reading("/data/x.bin", "fetch it again"):
      raise EOFError("ended early")
  assert str(info.value) == ("cannot read /data/x.bin: EOFError: ended "
                             "early; fetch it again")


def test_an_unreadable_file_error_is_a_value_error_of_one_line():
  with pytest.raises(ValueError) as info:
    with workdir.reading("/data/x.json", "fetch it again"):
      json.loads('{"a": [1,\n 2')
  assert "\n" not in str(info.value)
  assert info.value.__cause__ is None and info.value.__suppress_context__


def test_reading_leaves_a_missing_file_to_the_caller(tmp_path):
  with pytest.raises(FileNotFoundError):
    with workdir.reading(str(tmp_path / "none"), "fetch it again"):
      open(tmp_path / "none")


def test_reading_keeps_the_file_a_nested_read_names():
  with pytest.raises(ValueError, match="cannot read inner: KeyError"):
    with workdir.reading("outer", "a"), workdir.reading("inner", "b"):
      raise KeyError("x")


def test_reading_converts_other_errors_only_when_asked():
  with pytest.raises(RuntimeError):
    with workdir.reading("ckpt", "train again"):
      raise RuntimeError("tensorstore")
  with pytest.raises(ValueError, match="cannot read ckpt: RuntimeError"):
    with workdir.reading("ckpt", "train again", also=(RuntimeError,)):
      raise RuntimeError("tensorstore")


def test_a_long_reason_is_cut_to_a_short_one():
  with pytest.raises(ValueError) as info:
    with workdir.reading("ckpt", "train again"):
      raise ValueError("x" * 5000)
  assert len(str(info.value)) < 300


def test_advise_gives_a_caller_s_advice():
  with pytest.raises(ValueError, match=r"^cannot read f: EOFError; delete "
                     r"w/a and run again: the stage makes it again$"):
    with workdir.advise(workdir.remake("w/a")):
      with workdir.reading("f", workdir.DAMAGED):
        raise EOFError


def test_an_unreadable_file_error_crosses_processes():
  error = workdir.UnreadableFileError("a.png", "cut", "copy it again")
  again = pickle.loads(pickle.dumps(error))
  assert str(again) == str(error) and again.path == "a.png"


def test_load_json_of_a_truncated_file_names_it(tmp_path):
  path = str(tmp_path / "a.json")
  workdir.write_json(path, {"key": list(range(10))})
  _half(path)
  with pytest.raises(ValueError, match=r"cannot read .*a.json: "
                     r"JSONDecodeError.*; fix it"):
    workdir.load_json(path, "fix it")


def test_read_npz_of_a_truncated_file_names_it(tmp_path):
  path = str(tmp_path / "a.npz")
  workdir.write_npz(path, x=np.arange(1000))
  _half(path)
  with pytest.raises(ValueError, match=r"cannot read .*a.npz: BadZipFile.*; "
                     "the file is truncated or corrupt"):
    workdir.read_npz(path, ("x",))


def test_read_npz_of_a_file_cut_inside_a_member_names_it(tmp_path):
  path = tmp_path / "a.npz"
  workdir.write_npz(str(path), x=np.arange(1000), y=np.arange(1000))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2] + data[-200:])
  with pytest.raises(ValueError, match=r"cannot read .*a.npz: "):
    workdir.read_npz(str(path), ("x", "y"))


def test_read_npz_of_a_file_that_is_not_a_zip_says_so(tmp_path):
  path = tmp_path / "a.npz"
  path.write_bytes(b"not an archive at all")
  with pytest.raises(ValueError, match=r"a.npz: not an .npz \(zip\) archive"):
    workdir.read_npz(str(path), ("x",))


def test_read_npz_without_a_member_names_the_file(tmp_path):
  workdir.write_npz(str(tmp_path / "a.npz"), x=np.arange(3))
  with pytest.raises(ValueError, match=r"cannot read .*a.npz: KeyError"):
    workdir.read_npz(str(tmp_path / "a.npz"), ("y",))


def test_array_layout_of_an_npy_cut_in_its_header_names_it(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((4, 3)))
  os.truncate(tmp_path / "a.npy", 30)
  with pytest.raises(ValueError, match=r"cannot read .*a.npy: ValueError: "
                     "EOF"):
    workdir.array_layout(str(tmp_path / "a.npy"))


def test_array_layout_of_a_missing_file_is_a_value_error(tmp_path):
  with pytest.raises(ValueError, match="none.npy: no such file"):
    workdir.array_layout(str(tmp_path / "none.npy"))


def test_read_rows_of_a_file_cut_after_its_layout_names_it(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((100, 10)))
  layout = workdir.array_layout(str(tmp_path / "a.npy"))
  _half(tmp_path / "a.npy")
  with pytest.raises(ValueError, match=r"a.npy: cut short at row \d+; "
                     "copy it"):
    workdir.read_rows(layout, 0, 100, advice="copy it")
