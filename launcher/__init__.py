"""The launcher: a thin layer that runs `lit.train.run.run` on SLURM (or locally) through submitit.

`python -m launcher submit JOB.yaml` validates the job spec, submits one task per GPU with
submitit, and leaves every piece of state in the run directory: a requeued or resumed job
simply continues from the newest checkpoint there.

Its modules in layers, top to bottom; an import only points down (tests/test_boundaries.py):
- the command line: `__main__`, `cli_status`, `cli_sweep`, `demo`, `ablation`;
- reading run folders: `status`;
- deciding and submitting: `sweep` → `pipeline`, `local` → `submit` (`resume_config`: every resume's checks);
- running on the node: `stage_task` → `task` → `retry`, `boot`;
- a sweep's report: `report` (its last member writes it on its node);
- run folders and cluster kinds: `sweepdir` → `rundir` (layout and state, through `lit.io` and `lit.runlog`),
  `preflight` → `clusters` (slurm, local, debug);
- the job spec and the submitit adapter: `spec`, `sweep_spec`, `submitit_api`, and this package's logger.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("lit.launcher")
"""The launcher's logger: a child of lit's, so `lit.log.setup_logging` prints it too."""

__all__ = ["logger"]
