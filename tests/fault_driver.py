"""`python fault_driver.py PHASE K ARGS...`: run `dgx ARGS` and signal the process at the K-th call of the function
that does PHASE's work: calibration (``calibrate.dense_rewards``, after it returns), training (``trainer.update``,
after the update, before its checkpoint), checkpoint (``checkpoint.sha256``, while the manifest of a checkpoint is
written) or evaluation (``benchmarks.generate``, after the images are drawn, before they are scored). The signal is
SIGKILL, or the one named by $DGX_FAULT_SIGNAL (e.g. SIGTERM)."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the registry of the tests' tiny config names dgx_test_helpers
import dgx.eval.benchmarks as benchmarks  # noqa: E402
import dgx.grpo.calibrate as calibrate  # noqa: E402
import dgx.grpo.checkpoint as checkpoint  # noqa: E402
import dgx.grpo.trainer as trainer  # noqa: E402
from dgx.grpo.cli import main  # noqa: E402

TARGETS = {
    "calibration": (calibrate, "dense_rewards"),
    "training": (trainer, "update"),
    "checkpoint": (checkpoint, "sha256"),
    "evaluation": (benchmarks, "generate"),
}

phase, k = sys.argv[1], int(sys.argv[2])
module, name = TARGETS[phase]
original, calls = getattr(module, name), [0]


def killing(*args, **kwargs):
    out = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == k:
        os.kill(os.getpid(), signal.Signals[os.environ.get("DGX_FAULT_SIGNAL", "SIGKILL")])
    return out


setattr(module, name, killing)
sys.argv = ["dgx", *sys.argv[3:]]
main()
