import ml_collections


def small_config() -> ml_collections.ConfigDict:
  """A config with a top-level field, a section and an unrelated field."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.ipc = 10
  c.quantize = ml_collections.ConfigDict({"method": "lloyd", "tol": 1e-4})
  return c
