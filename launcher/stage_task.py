"""The task of a pipeline stage other than training (prior, shards, embed, eval): a submitit `Checkpointable` around `lit.stages`.

Like `launcher.task.Task`: USR2 (or TERM) sets lit's stop flag, the stage finishes the unit in
flight (a shard) or checkpoints (the prior) and returns `stopped`, rank 0 requeues the job through
submitit, and the requeued job goes on where it stopped; a requeued stage that is complete already
does nothing. The stage's bookkeeping lives in its home, `RUN_DIR/stages/NAME`:
config.yaml, attempts.jsonl, metrics.jsonl (start / stop / done lines) and submitit's slurm/.
"""

from __future__ import annotations

import socket
from typing import Any

from launcher import clusters, logger
from launcher.retry import record_failure
from launcher.rundir import RunDir
from launcher.submitit_api import Checkpointable, DelayedSubmission, JobEnvironment
from launcher.task import requeue, task_environment, wait_for_slurm
from lit import signals, stages
from lit.config import Config
from lit.runlog import append_metric

SAVED = {"prior": "the prior's checkpoint", "shards": "complete shards", "embed": "complete shards"}
"""What a stage that stopped has kept (its stages skip their work once complete, when a finished job is requeued)."""


class StageTask(Checkpointable):
    """Run one stage on every task of its job; requeue through submitit when it stops on a signal."""

    def __init__(self, cfg: Config, stage: str, home: str, master_addr: str | None = None, master_port: int | None = None) -> None:
        self.cfg, self.stage, self.home = cfg, stage, home
        self.master_addr, self.master_port = master_addr, master_port

    def __call__(self) -> dict[str, Any]:
        env = task_environment(self.master_addr, self.master_port)
        home = RunDir(self.home)
        if env.global_rank == 0:
            record = home.record_start(env.job_id, env.cluster, world_size=env.num_tasks, stage=self.stage)
            logger.info("stage %s, attempt %d (job %s): previous stop: %s", self.stage, record.attempt, env.job_id,
                        record.last_stop)
            append_metric(home, "start", 0, stage=self.stage, host=socket.gethostname())
        signals.clear()
        previous = signals.install()
        try:
            outcome = self._run(env)
        except BaseException as err:
            if not isinstance(err, (SystemExit, KeyboardInterrupt)):
                record_failure(home, env.job_id, env.global_rank, err)
            raise
        finally:
            signals.restore(previous)
        reason = signals.reason()
        signals.clear()
        if outcome != "stopped":
            if env.global_rank == 0:
                append_metric(home, "done", 0, stage=self.stage, outcome=outcome)
            return {"status": "finished", "stage": self.stage, "rank": env.global_rank}
        saved = f"stage {self.stage}: {SAVED.get(self.stage, 'its progress')}"
        if env.global_rank == 0:
            append_metric(home, "stop", 0, stage=self.stage, reason=reason)
        if "SIGTERM" in reason and "SIGUSR2" not in reason and clusters.named(env.cluster).scheduled:
            wait_for_slurm(saved)  # a stage that exits 0 here would satisfy the next stage's afterok, unfinished
        elif env.global_rank == 0:
            requeue(env, home, self.cfg.slurm.max_requeues, saved, self.cfg.run_dir)
        return {"status": "stopped", "stage": self.stage, "rank": env.global_rank, "reason": reason}

    def _run(self, env: JobEnvironment) -> str:
        if self.stage in SAVED and stages.state(self.cfg, self.stage).complete:
            # e.g. a `scontrol requeue` of a finished stage: its outputs (read by the stages after it) stay untouched
            logger.info("stage %s is complete already: nothing to do", self.stage)
            return "done"
        if self.stage == "prior":
            return stages.run_prior(self.cfg, signals.requested)
        if self.stage == "shards":
            return stages.run_shards(self.cfg, signals.requested, part=(env.global_rank, env.num_tasks))
        if self.stage == "embed":
            return stages.run_embed(self.cfg, signals.requested)
        if self.stage == "eval":
            stages.run_eval(self.cfg)
            return "done"
        raise ValueError(f"StageTask runs prior, shards, embed or eval, not {self.stage!r} (training is launcher.task.Task)")

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:  # type: ignore[override]  # None: no requeue
        """Called by submitit before a requeue: resubmit unchanged (complete shards, the prior's checkpoint are on disk)."""
        if RunDir(self.home).metrics().has_result():
            return None
        return DelayedSubmission(self)


__all__ = ["StageTask"]
