"""tools/export_embedded.py: what it exports matches the shipped assets."""


from pqd_jax import embedded
from tests.conftest import load_script


def _load_tool():
  return load_script("tools", "export_embedded.py")


def test_the_teacher_model_loads_the_shipped_teacher():
  tool = _load_tool()
  embedded.load_teacher_variables("fashion_mnist", tool.teacher_model(),
                                  (28, 28, 1))


def test_the_records_match_the_shipped_provenance():
  records = _load_tool().records("2000-01-01")
  for name, record in records.items():
    shipped = embedded.provenance("fashion_mnist", name)
    assert record["command"] == shipped["command"]
    assert record["exported"] == "2000-01-01"
  assert records["teacher"]["model"] == embedded.provenance(
      "fashion_mnist", "teacher")["model"]
