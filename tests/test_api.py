"""The notebook API: every documented example runs (doctests), and import stays torch-free."""

import doctest
import subprocess
import sys

import stitchlib
from stitchlib import api


def test_every_api_example_runs():
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


def test_api_is_reexported_lazily():
    assert stitchlib.fit_dm is api.fit_dm and set(stitchlib.__all__) == set(api.__all__)
    code = "import sys, stitchlib, stitchlib.catalog, stitchlib.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
