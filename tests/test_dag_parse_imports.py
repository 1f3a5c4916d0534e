"""What parsing the DAG folder imports: every task pod parses its DAG file before it runs, so
a heavy import there is paid once per task. Real DagBag, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "dags"

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dags": len(bag.dag_ids), "errors": list(bag.import_errors),
                  "loaded": sorted(m for m in sys.modules if m in sys.argv[2:])}))
"""

HEAVY = ["boto3", "airflow.providers.amazon.aws.hooks.s3", "pandas", "polars", "duckdb"]


def test_parsing_the_dags_imports_no_aws_sdk_nor_dataframe_library(airflow_db):
    """The assets' x- URI scheme keeps Airflow from loading every provider's asset handler
    (boto3 among them) at parse time; the data libraries are the steps' business."""
    done = subprocess.run([sys.executable, "-c", PARSE, str(DAGS), *HEAVY], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["dags"] >= 4
    assert result["loaded"] == []
