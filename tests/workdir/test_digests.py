import pytest

from pqd_jax import workdir
from tests.workdir.conftest import small_config as _config


def test_digest_depends_on_every_part_and_not_on_dict_order():
  assert workdir.digest({"a": 1, "b": 2}) == workdir.digest({"b": 2, "a": 1})
  assert workdir.digest({"a": 1}) != workdir.digest({"a": 2})
  assert workdir.digest("x", (1, 2)) == workdir.digest("x", [1, 2])


def test_a_view_returns_declared_fields_and_sections():
  view = workdir.ConfigView(_config(), ("seed", "quantize"))
  assert view.seed == 0
  assert view.quantize.method == "lloyd"
  assert view["quantize"]["tol"] == 1e-4


def test_a_view_refuses_an_undeclared_field_naming_it():
  view = workdir.ConfigView(_config(), ("seed", "quantize.method"), "stage x")
  assert view.quantize.method == "lloyd"
  with pytest.raises(workdir.UndeclaredConfigRead, match="config.ipc"):
    _ = view.ipc
  with pytest.raises(workdir.UndeclaredConfigRead, match="config.quantize.tol"):
    _ = view.quantize.tol
  with pytest.raises(workdir.UndeclaredConfigRead, match="config.ipc"):
    view.get("ipc", 3)


def test_a_view_is_read_only():
  with pytest.raises(AttributeError):
    workdir.ConfigView(_config(), ("seed",)).seed = 1
