"""The pipeline's stages, one module each, in the order they run.

Each stage is a function ``(workdir, config, data, upstream artefacts...) ->
result`` whose artefact is declared by a :class:`pqd_jax.workdir.Stage`: the
config paths it reads (its digest covers exactly those), the data splits it
reads and the outputs that make it complete.

=========  ===========================================================
step       artefacts
=========  ===========================================================
encode     ``autoencoder/`` (trained here or loaded), ``latents/``
quantize   ``quantization/`` (``quantization.npz``), ``quantization_sweep/``
decode     ``prior/`` (trained here or loaded), ``synthetic/``
relabel    ``teacher/`` (trained here, or loaded from a checkpoint)
train      ``student/seed<s>/``
eval       ``eval/`` (``results.json``)
=========  ===========================================================
"""

STEPS = ("encode", "quantize", "decode", "relabel", "train", "eval")

__all__ = ["STEPS"]
