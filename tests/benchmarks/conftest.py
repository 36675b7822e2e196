"""The benchmark scripts import their shared module as ``harness``.

They run as ``python benchmarks/<name>.py``, which puts ``benchmarks/`` on
``sys.path``; the tests put it there too.
"""

import os
import sys

from tests.conftest import ROOT

BENCHMARKS = os.path.join(ROOT, "benchmarks")
if BENCHMARKS not in sys.path:
  sys.path.append(BENCHMARKS)
