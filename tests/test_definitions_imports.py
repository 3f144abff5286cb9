"""Loading the Dagster definitions imports no ML library.

Definitions load in every run process, in the sensor daemon and in the UI: importing
scikit-learn and SciPy there cost seconds each time. The training and scoring code is
imported inside the asset bodies instead; this test keeps it that way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("sklearn", "scipy", "great_expectations", "treelite", "numba")

SCRIPT = """
import json, sys
import pipelines.definitions as d
d.defs()
print(json.dumps(sorted(sys.modules)))
"""


def test_definitions_import_no_ml_library(tmp_path):
    # A fresh interpreter: the test session itself may have imported sklearn already.
    env = {**os.environ, "UPI_RISK_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    offending = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert not offending, f"loading pipelines.definitions imported {offending}"
