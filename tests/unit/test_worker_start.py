"""What the worker's start costs: the heavy modules it must not import before the first step,
and the deterministic flag it sets without them."""

from __future__ import annotations

import json
import subprocess
import sys

# Each of these adds 0.6-1.7 s to every start and is not needed to train (peft: only LoRA;
# inductor: nothing compiles; DCP: only checkpoints, imported when one is written or read).
NOT_AT_START = ("peft", "torch._inductor", "torch._dynamo", "torch.distributed.checkpoint")

PROBE = """
import json, sys, torch
import launcher.worker.run
from launcher.worker.startup import deterministic_algorithms
deterministic_algorithms(True)
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                                   ("peft", "torch")),
                  "on": torch.are_deterministic_algorithms_enabled(),
                  "warn_only": torch.is_deterministic_algorithms_warn_only_enabled()}))
"""


def test_worker_start_imports_no_heavy_module_and_sets_determinism() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in found["loaded"]
             if any(m == name or m.startswith(name + ".") for name in NOT_AT_START)]
    assert heavy == []
    assert "torch" in found["loaded"]  # the probe did import the worker's modules
    assert found["on"] and found["warn_only"]
