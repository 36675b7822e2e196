"""Torchvision's ResNet-18 weights as ``pqd_jax.models.ResNet18`` variables.

The distillation papers (SRe2L, D4M, DDOQ) relabel ImageNet with
torchvision's pretrained ResNet-18. :func:`load_resnet18` reads its
``state_dict`` — a ``.pth`` written by ``torch.save`` (read without torch,
by a restricted unpickler that builds numpy arrays and refuses any other
object) or a ``.safetensors`` file — and maps it one to one onto the flax
module: conv kernels OIHW → HWIO, BatchNorm weight/bias/running mean/var
→ scale/bias/mean/var, ``layerI.J.downsample.{0,1}`` → the block's shortcut
conv and norm, ``fc`` transposed to the head. Use the module with
``torchvision_input=True`` so that the pipeline's ``[-1, 1]`` images get
torchvision's ImageNet normalisation.
"""

import collections
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["PREFIX", "checkpoint_file", "load_resnet18", "read_state_dict",
           "resnet18_variables", "torchvision_teacher"]

# ``teacher.checkpoint = "torchvision:<file>"`` names a torchvision state_dict.
PREFIX = "torchvision:"

# torch storage class name -> numpy dtype.
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:

  def __init__(self, dtype):
    self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """A numpy view of ``storage`` as torch's ``_rebuild_tensor_v2`` builds."""
  del unused
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Unpickler(pickle.Unpickler):
  """Builds a ``torch.save`` pickle's tensors as numpy arrays, nothing else."""

  _GLOBALS = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  }

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self.archive, self.prefix = archive, prefix

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGES:
      return _StorageType(_STORAGES[name])
    if (module, name) in self._GLOBALS:
      return self._GLOBALS[module, name]
    raise pickle.UnpicklingError(
        f"it holds a {module}.{name}, which is not part of a state_dict")

  def persistent_load(self, pid):
    _, storage_type, key, _, numel = pid
    raw = self.archive.read(f"{self.prefix}/data/{key}")
    return np.frombuffer(raw, storage_type.dtype, count=numel)


def _read_pth(path: str) -> Any:
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
      if len(pkl) != 1:
        raise ValueError("it has no data.pkl")
      prefix = pkl[0][:-len("/data.pkl")]
      with archive.open(pkl[0]) as f:
        return _Unpickler(f, archive, prefix).load()
  except zipfile.BadZipFile:
    raise ValueError(
        f"cannot read {path}: not a torch.save zip archive (files of torch "
        "< 1.6 use a legacy format; re-save it with a current torch or "
        "convert it to safetensors)") from None
  except (pickle.UnpicklingError, ValueError, KeyError, EOFError) as e:
    raise ValueError(f"cannot read {path}: {e}") from None


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A PyTorch ``state_dict`` from a ``.pth``/``.pt`` or ``.safetensors``.

  A checkpoint that nests the weights under ``"state_dict"`` or ``"model"``
  is unwrapped, and a ``module.`` prefix (DataParallel) is dropped.

  Raises:
    ValueError: naming the file if it is missing, truncated, or not a
      ``state_dict`` of tensors.
  """
  if not os.path.isfile(path):
    raise ValueError(f"no such file: {path!r} (expected a torchvision "
                     "state_dict, .pth or .safetensors).")
  if path.endswith(".safetensors"):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
      state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
      raise ValueError(f"cannot read {path}: {e}") from None
  else:
    state = _read_pth(path)
  for key in ("state_dict", "model"):
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict) or not all(
      isinstance(v, np.ndarray) for v in state.values()):
    raise ValueError(f"cannot read {path}: it is not a state_dict of "
                     "tensors.")
  return {k.removeprefix("module."): v for k, v in state.items()}


def _conv(w):
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def resnet18_variables(state: dict[str, np.ndarray],
                       name: str = "state_dict") -> dict:
  """``{"params", "batch_stats"}`` of ``models.ResNet18(stem="imagenet")``.

  Args:
    state: torchvision ResNet-18 ``state_dict`` (numpy arrays).
    name: what to call it in errors (e.g. its file).

  Returns:
    The flax variables, float32; the head has as many classes as ``fc``.

  Raises:
    ValueError: naming the first missing key or wrong shape, or saying
      that the file is another ResNet (bottleneck blocks: ResNet-50+).
  """
  if any(k.endswith(".conv3.weight") for k in state):
    raise ValueError(f"{name} is a ResNet with bottleneck blocks (it has "
                     "conv3 layers: ResNet-50 or deeper); expected "
                     "torchvision's ResNet-18.")
  used = set()

  def get(key, shape):
    if key not in state:
      raise ValueError(f"{name} has no {key!r}; expected torchvision's "
                       "ResNet-18 keys.")
    value = np.asarray(state[key], np.float32)
    if value.shape != shape:
      raise ValueError(f"{name}: {key!r} has shape {value.shape}, expected "
                       f"{shape} (torchvision's ResNet-18).")
    used.add(key)
    return value

  def norm(prefix, c):
    params = {"scale": get(f"{prefix}.weight", (c,)),
              "bias": get(f"{prefix}.bias", (c,))}
    stats = {"mean": get(f"{prefix}.running_mean", (c,)),
             "var": get(f"{prefix}.running_var", (c,))}
    used.add(f"{prefix}.num_batches_tracked")
    return params, stats

  params, stats = {}, {}
  params["stem_conv"] = {"kernel": _conv(get("conv1.weight", (64, 3, 7, 7)))}
  params["stem_norm"], stats["stem_norm"] = norm("bn1", 64)
  c_in = 64
  for i in range(4):
    c = 64 * 2 ** i
    for j in range(2):
      src, dst = f"layer{i + 1}.{j}", f"stage{i}_block{j}"
      p = {"Conv_0": {"kernel": _conv(get(f"{src}.conv1.weight",
                                          (c, c_in, 3, 3)))},
           "Conv_1": {"kernel": _conv(get(f"{src}.conv2.weight",
                                          (c, c, 3, 3)))}}
      s = {}
      p["BatchNorm_0"], s["BatchNorm_0"] = norm(f"{src}.bn1", c)
      p["BatchNorm_1"], s["BatchNorm_1"] = norm(f"{src}.bn2", c)
      if i > 0 and j == 0:
        p["shortcut_conv"] = {"kernel": _conv(get(
            f"{src}.downsample.0.weight", (c, c_in, 1, 1)))}
        p["shortcut_norm"], s["shortcut_norm"] = norm(
            f"{src}.downsample.1", c)
      params[dst], stats[dst] = p, s
      c_in = c
  num_classes = np.shape(state.get("fc.weight", np.zeros((0, 512))))[0]
  params["head"] = {"kernel": get("fc.weight", (num_classes, 512)).T,
                    "bias": get("fc.bias", (num_classes,))}
  extra = sorted(set(state) - used)
  if extra:
    raise ValueError(f"{name} has keys torchvision's ResNet-18 does not: "
                     f"{extra[:5]}.")
  return {"params": params, "batch_stats": stats}


def load_resnet18(path: str) -> dict:
  """:func:`resnet18_variables` of the ``state_dict`` file ``path``."""
  return resnet18_variables(read_state_dict(path), name=path)


def checkpoint_file(checkpoint: str) -> str | None:
  """The file of a ``"torchvision:<file>"`` checkpoint value, else None."""
  if checkpoint.startswith(PREFIX):
    return checkpoint[len(PREFIX):]
  return None


def _output_classes(class_names, num_outputs: int, name: str):
  """Which of the head's outputs are the dataset's classes, in its order."""
  from pqd_jax.data import class_names as class_names_lib

  names = list(class_names)
  if num_outputs == len(names) and num_outputs != 1000:
    return None  # a head trained on this dataset's classes
  if num_outputs != 1000:
    raise ValueError(f"{name} has {num_outputs} outputs; expected 1000 "
                     f"(ImageNet) or the dataset's {len(names)} classes.")
  order = list(class_names_lib.imagenet_synonyms())  # torchvision's order
  unknown = [n for n in names if n not in order]
  if unknown:
    raise ValueError(
        f"{name} is an ImageNet-1k classifier, but the dataset's classes "
        f"{unknown[:5]} are not ImageNet WordNet ids (n01440764, ...).")
  indices = tuple(order.index(n) for n in names)
  return None if indices == tuple(range(1000)) else indices


def torchvision_teacher(path: str, class_names) -> tuple[Any, dict]:
  """A torchvision ResNet-18 file as a teacher of the dataset's classes.

  Args:
    path: a ResNet-18 ``state_dict`` (``.pth`` or ``.safetensors``), e.g.
      torchvision's ``resnet18-f37072fd.pth`` (ImageNet-1k, 69.8% top-1).
    class_names: the dataset's classes. With a 1000-class head they must
      be ImageNet WordNet ids (tfds's and torchvision's class order agree),
      and the teacher returns their logits only, in the dataset's order (a
      subset such as Imagenette works); a head of the dataset's size is
      used as it is.

  Returns:
    ``(model, variables)``: ``models.ResNet18`` with the ImageNet stem and
    torchvision's input normalisation, and its variables.

  Raises:
    ValueError: for a bad file, or classes it cannot label.
  """
  from pqd_jax.models.resnet import ResNet18

  variables = load_resnet18(path)
  outputs = int(variables["params"]["head"]["bias"].shape[0])
  model = ResNet18(num_classes=outputs, stem="imagenet",
                   torchvision_input=True,
                   output_classes=_output_classes(class_names, outputs, path))
  return model, variables
