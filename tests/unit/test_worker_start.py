"""What the worker's start costs: the heavy modules it must not import before the first step."""

from __future__ import annotations

import json
import subprocess
import sys

# Each adds 0.4-1.7 s to every start and is not needed to train (peft: only LoRA; datasets:
# only to tokenize, the cache is read with pyarrow). torch.distributed.checkpoint, _dynamo and
# _inductor come with transformers' modeling_utils, whatever the worker does.
NOT_AT_START = ("peft", "datasets")

PROBE = """
import json, sys, torch
import launcher.worker.run
import launcher.tasks.causal_lm, launcher.tasks.sequence_classification
import launcher.tasks.token_classification
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                                   ("peft", "torch", "datasets"))}))
"""


def test_worker_start_imports_no_module_it_does_not_need() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in found["loaded"]
             if any(m == name or m.startswith(name + ".") for name in NOT_AT_START)]
    assert heavy == []
    assert "torch" in found["loaded"]  # the probe did import the worker's modules
