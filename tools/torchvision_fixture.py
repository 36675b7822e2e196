"""Makes the test fixture of the torchvision ResNet-18 importer.

torch and torchvision are not test dependencies (a default Linux torch wheel
pulls several GB of CUDA libraries), so their output is committed instead:
torchvision's own ResNet-18, loaded with :func:`random_state_dict` (random
weights drawn by numpy from a seed, so the tests draw the same ones without
storing 47 MB), computes the logits of :func:`random_images` in eval mode.
The script also writes a small ``torch.save`` file of assorted tensors for
the torch-free ``.pth`` reader. Re-run it with torch and torchvision::

  python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy
  /tmp/tv/bin/python tools/torchvision_fixture.py

It writes ``tests/fixtures/torchvision/torchvision_resnet18.npz``,
``tests/fixtures/torchvision/small_state_dict.pth`` (with its values in
``small_state_dict.npz``) and ``eval_crop.npz``: torchvision's
``Resize(256)`` + ``CenterCrop(224)`` of :func:`eval_image`, landscape
and portrait.
"""

import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tests", "fixtures", "torchvision")
NUM_CLASSES = 1000
IMAGE_SIDE = 64


def _resnet18_shapes(num_classes: int) -> list[tuple[str, tuple]]:
  """The ResNet-18 ``state_dict`` keys (torchvision's) and shapes, in order."""
  shapes = [("conv1.weight", (64, 3, 7, 7))]

  def bn(prefix, c):
    shapes.extend([(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)),
                   (f"{prefix}.running_mean", (c,)),
                   (f"{prefix}.running_var", (c,)),
                   (f"{prefix}.num_batches_tracked", ())])

  bn("bn1", 64)
  c_in = 64
  for i in range(4):
    c = 64 * 2 ** i
    for j in range(2):
      p = f"layer{i + 1}.{j}"
      shapes.append((f"{p}.conv1.weight", (c, c_in, 3, 3)))
      bn(f"{p}.bn1", c)
      shapes.append((f"{p}.conv2.weight", (c, c, 3, 3)))
      bn(f"{p}.bn2", c)
      if i > 0 and j == 0:
        shapes.append((f"{p}.downsample.0.weight", (c, c_in, 1, 1)))
        bn(f"{p}.downsample.1", c)
      c_in = c
  shapes += [("fc.weight", (num_classes, 512)), ("fc.bias", (num_classes,))]
  return shapes


def random_state_dict(seed: int = 0,
                      num_classes: int = NUM_CLASSES) -> dict[str, np.ndarray]:
  """A ResNet-18 ``state_dict`` of random weights, drawn from ``seed``.

  He-scaled convs, BatchNorm statistics away from the identity, float32;
  ``num_batches_tracked`` int64.
  """
  gen = np.random.default_rng(seed)
  out = {}
  for key, shape in _resnet18_shapes(num_classes):
    if key.endswith("num_batches_tracked"):
      out[key] = np.array(100, np.int64)
      continue
    if key.endswith("running_var") or (key.endswith(".weight")
                                       and len(shape) == 1):
      value = gen.uniform(0.5, 1.5, shape)
    elif len(shape) == 4:
      fan_in = shape[1] * shape[2] * shape[3]
      value = gen.normal(0, np.sqrt(2.0 / fan_in), shape)
    elif key == "fc.weight":
      value = gen.normal(0, 0.002, shape)  # logits of order 10
    else:  # biases and running means
      value = gen.normal(0, 0.1, shape)
    out[key] = value.astype(np.float32)
  return out


def random_images(seed: int = 1, n: int = 2) -> np.ndarray:
  """``[n, IMAGE_SIDE, IMAGE_SIDE, 3]`` float32 images in [-1, 1]."""
  gen = np.random.default_rng(seed)
  return gen.uniform(-1, 1, (n, IMAGE_SIDE, IMAGE_SIDE, 3)).astype(np.float32)


def eval_image(width: int = 333, height: int = 250) -> np.ndarray:
  """A non-square ``[height, width, 3]`` uint8 image of flat bands.

  Eight levels per channel: the resampling shows at every band's edge,
  and the fixture compresses well.
  """
  yy, xx = np.mgrid[:height, :width] / np.array([height, width])[:, None,
                                                                  None]
  rgb = np.stack([np.sin(7 * xx + 3 * yy), np.cos(5 * yy - 2 * xx),
                  (xx > 0.6) * 1.0 - 0.5], axis=-1)
  return (np.round(3.5 * (rgb + 1)) * 36).astype(np.uint8)


def small_state_dict() -> dict[str, np.ndarray]:
  """Assorted dtypes and shapes for the ``.pth`` reader."""
  gen = np.random.default_rng(2)
  return {
      "weight": gen.normal(size=(3, 4, 2, 2)).astype(np.float32),
      "half": gen.normal(size=(5,)).astype(np.float16),
      "double": gen.normal(size=(2, 3)),
      "count": np.array(7, np.int64),
      "flags": np.array([True, False, True]),
  }


def main() -> None:
  """Writes the fixtures (needs torch and torchvision)."""
  import torch
  import torchvision

  os.makedirs(FIXTURES, exist_ok=True)
  model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
  model.load_state_dict({k: torch.from_numpy(np.asarray(v))
                         for k, v in random_state_dict().items()})
  model.eval()
  images = random_images()
  # torchvision's input: NCHW, ImageNet-normalised images in [0, 1].
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  x = ((images + 1) / 2 - mean) / std
  with torch.no_grad():
    logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.savez(os.path.join(FIXTURES, "torchvision_resnet18.npz"), logits=logits,
           torch_version=torch.__version__,
           torchvision_version=torchvision.__version__)
  from PIL import Image
  from torchvision import transforms

  crop = transforms.Compose([transforms.Resize(256),
                             transforms.CenterCrop(224)])
  crops = {f"{w}x{h}": np.asarray(crop(Image.fromarray(eval_image(w, h))))
           for w, h in ((333, 250), (250, 333))}
  np.savez_compressed(os.path.join(FIXTURES, "eval_crop.npz"), **crops)
  small = small_state_dict()
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v))
             for k, v in small.items()}
  tensors["column"] = tensors["double"][:, 1]  # a strided view
  torch.save(tensors, os.path.join(FIXTURES, "small_state_dict.pth"))
  np.savez(os.path.join(FIXTURES, "small_state_dict.npz"),
           column=small["double"][:, 1], **small)
  print(f"wrote {FIXTURES}: logits {logits.shape}, |logits| max "
        f"{np.abs(logits).max():.3g}")


if __name__ == "__main__":
  main()
