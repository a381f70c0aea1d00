"""Compression beyond post-training quantization: structured pruning, distillation from the source model and
quantization-aware fine-tuning, run on a PyTorch source before its build (``edgeify build --prune/--distill/--qat``).

* :class:`CompressOptions` -- what to do and the training budget; :func:`compress_source` -- do it, returning the
  compressed model as a new ``.pt2`` source for the engine's pipeline (its own int8 quantizer and parity gate);
  ``Compressed.finish`` -- the end-to-end accuracy against the original model and the manifest's ``compression``.
* ``--train``: an ``.npz`` or a loader reference (``pkg.mod:factory``, which imports and runs that code).

torch, torch-pruning and torchao are imported inside the functions that use them (``pip install 'edgeify[compress]'``).
"""

from __future__ import annotations

from .options import CompressOptions, parse_duration
from .run import Compressed, compress_source, refuse_unsupported

__all__ = ["CompressOptions", "Compressed", "compress_source", "parse_duration", "refuse_unsupported"]
