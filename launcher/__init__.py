"""The launcher: a thin layer that runs `lit.train.run.run` on SLURM (or locally) through submitit.

`python -m launcher submit JOB.yaml` validates the job spec, submits one task per GPU with
submitit, and leaves every piece of state in the run directory: a requeued or resumed job
simply continues from the newest checkpoint there.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("lit.launcher")
"""The launcher's logger: a child of lit's, so `lit.log.setup_logging` prints it too."""

__all__ = ["logger"]
