"""The task every rank runs: a submitit `Checkpointable` around `lit.train.run.run`.

Signal → checkpoint → requeue:
0. `launcher.boot` starts the task and records a USR2 that arrives while the task loads; the task
   then requeues at once (step 3) without training.
1. submitit's `process_job` installs its handlers (USR2: `checkpoint_and_try_requeue`; TERM and
   CONT: logged and ignored), then calls the task.
2. `run()` swaps in lit's flag handler for USR2 and TERM; on a signal every rank agrees on the
   next step boundary, the checkpoint is saved there, and `run()` returns EXIT_PREEMPTED (75)
   with submitit's handlers back in place.
3. After a USR2, global rank 0 calls submitit's own installed handler: it counts the time-out
   (`max_num_timeout`), calls `Task.checkpoint()` and dumps the resubmission, runs
   `scontrol requeue` (local: exits 144 for the controller to restart the tasks) and exits.
   The other ranks return and exit 0; `srun --kill-on-bad-exit=1` ends anything left.
4. After a TERM alone (preemption without `preempt_send_user_signal`, `scancel`, `scontrol requeue`)
   the ranks wait for SLURM to requeue or end the job, as SLURM decides.
The run's state lives in the run directory, so a requeued task simply resumes there.
"""

from __future__ import annotations

import os
import random
import signal
import time
from types import FrameType
from typing import Any

from launcher import boot, clusters, logger
from launcher.preflight import PreflightFailed
from launcher.report import member_ended
from launcher.retry import record_failure
from launcher.rundir import RunDir
from launcher.spec import PORT_RANGE
from launcher.submitit_api import Checkpointable, DelayedSubmission, JobEnvironment, preempt_signal, submitit_handler_installed
from lit import checkpoint, signals
from lit.checklist import ok, report
from lit.config import Config
from lit.configlib import ConfigError
from lit.doctor import run_checks
from lit.log import console, setup_logging
from lit.train.resume import schedule_changes
from lit.train.run import EXIT_DIVERGED, EXIT_OK, run

TERM_WAIT_S = 900.0
"""Longest wait for SLURM's kill after a TERM-only stop (GraceTime/KillWait are far shorter)."""
LOCAL_KEEP = ("SLURM_CONF",)


class RequeueLimitReached(RuntimeError):
    """The job has been requeued `slurm.max_requeues` times: it stops instead of requeuing again."""


class DoctorFailed(RuntimeError):
    """`lit doctor` failed on a node before training (its report is in the task's log)."""


def master_port(job_id: str) -> int:
    """A port derived from the job id alone (as submitit's TorchDistributedEnvironment does): the same after a requeue."""
    return random.Random(str(job_id)).randint(*PORT_RANGE)


def rendezvous_env(env: JobEnvironment, master_addr: str | None = None, port: int | None = None) -> dict[str, str]:
    """MASTER_ADDR/MASTER_PORT and torch's rank variables for this task.

    MASTER_ADDR is the allocation's first host (SLURM) unless given; ranks come from the
    scheduler (SLURM_PROCID/SLURM_LOCALID, or submitit's SUBMITIT_LOCAL_* for local jobs).
    """
    return {
        "MASTER_ADDR": master_addr or env.hostnames[0],
        "MASTER_PORT": str(port or master_port(env.job_id)),
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(max(1, env.num_tasks // max(1, env.num_nodes))),
    }


def _ignore(signum: int, frame: FrameType | None) -> None:
    logger.info("ignoring %s: this task no longer checkpoints or requeues", signal.Signals(signum).name)


def _scrub_slurm_env() -> None:
    """A local job started inside a SLURM allocation must not look like a SLURM task to lit's resolver."""
    for name in [n for n in os.environ if n.startswith(("SLURM_", "SLURMD_", "SRUN_")) and n not in LOCAL_KEEP]:
        del os.environ[name]


def task_environment(master_addr: str | None, master_port: int | None) -> JobEnvironment:
    """submitit's view of this task, with the rendezvous variables set and logging for its rank."""
    env = JobEnvironment()
    if not clusters.named(env.cluster).scheduled:
        _scrub_slurm_env()
    os.environ.update(rendezvous_env(env, master_addr, master_port))
    setup_logging(rank=env.global_rank)
    return env


def wait_for_slurm(saved: str) -> None:
    """After a TERM alone: exiting now could end the job as COMPLETED; SLURM requeues or ends it instead."""
    logger.warning("SIGTERM: %s saved; waiting for SLURM to requeue or end the job", saved)
    deadline = time.monotonic() + TERM_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(1.0)


def requeue(env: JobEnvironment, home: RunDir, max_requeues: int, saved: str, run_dir: str) -> None:
    """Hand over to submitit's own handler: count, checkpoint(), requeue, exit (`home`: where the job's attempts are)."""
    done = home.attempts().requeues_of(env.job_id)
    if done >= max_requeues:
        signal.signal(preempt_signal(env), _ignore)
        raise RequeueLimitReached(
            f"stopped ({saved} saved), but job {env.job_id} has used its {done} requeue(s) "
            f"(slurm.max_requeues={max_requeues}): continue with `python -m launcher resume {run_dir}`")
    sig = preempt_signal(env)
    handler = submitit_handler_installed(sig)
    if handler is None:
        raise RuntimeError(f"submitit's {sig.name} handler is not installed: run the task through submitit")
    signal.signal(sig, _ignore)  # one requeue only, even if the signal comes again
    logger.warning("%s saved: requeuing job %s through submitit", saved, env.job_id)
    handler(sig, None)  # submitit: checkpoint() → dump → requeue → sys.exit (returns only when mocked)


class Task(Checkpointable):
    """Train one rank of `cfg`; requeue through submitit when the run stops on a signal."""

    def __init__(self, cfg: Config, master_addr: str | None = None, master_port: int | None = None) -> None:
        self.cfg = cfg
        self.master_addr = master_addr
        self.master_port = master_port

    @property
    def folder(self) -> RunDir:
        """The run folder (read anew at each use: other ranks and attempts write to it)."""
        return RunDir(self.cfg.run_dir)

    def __call__(self) -> dict[str, Any]:
        env = task_environment(self.master_addr, self.master_port)
        if preempt_signal(env) in boot.EARLY:  # the signal came while the task was loading: stop before training
            boot.EARLY.clear()
            logger.warning("%s arrived before training started", preempt_signal(env).name)
            if env.global_rank == 0:
                self._record_start(env)
                self._requeue(env, self.folder.checkpoint_step())
            return {"status": "stopped", "rank": env.global_rank, "step": self.folder.checkpoint_step(),
                    "reason": f"{preempt_signal(env).name} before training"}
        try:
            if env.global_rank == 0:
                self._record_start(env)
            if clusters.of(self.cfg).doctor_in_task(self.cfg) and env.local_rank == 0:
                self._doctor()
            signals.clear()
            code = run(self.cfg)
        except BaseException as err:
            self._quiet(env)  # a failing task is never requeued by submitit (launcher.retry decides after srun)
            if not isinstance(err, (SystemExit, KeyboardInterrupt)):
                record_failure(self.folder, env.job_id, env.global_rank, err)
            raise
        reason = signals.reason()
        signals.clear()
        step = self.folder.checkpoint_step()
        if code == EXIT_DIVERGED:
            self._quiet(env)  # a result: the job ends well and never requeues (a sweep's other members go on)
            self._ended(env)
            return {"status": "diverged", "rank": env.global_rank, "step": step}
        if code == EXIT_OK:
            self._quiet(env)  # a finished run never requeues, whatever arrives now
            done = not self.cfg.train.stop_at_step or self.folder.metrics().has_result()
            if done:
                self._ended(env)
            return {"status": "finished" if done else "stopped", "rank": env.global_rank, "step": step}
        if code != signals.EXIT_PREEMPTED:
            raise RuntimeError(f"lit.train.run returned {code}, expected {EXIT_OK} or {signals.EXIT_PREEMPTED}")
        result = {"status": "stopped", "rank": env.global_rank, "step": step, "reason": reason}
        if "SIGTERM" in reason and "SIGUSR2" not in reason:
            if clusters.named(env.cluster).scheduled:
                wait_for_slurm(f"checkpoint at step {step}")
            return result
        if env.global_rank == 0:
            self._requeue(env, step)
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:  # type: ignore[override]  # None: no requeue (submitit accepts it)
        """Called by submitit before a requeue: resubmit this task unchanged (all state is on disk).

        None (no requeue) once the run is finished.
        """
        if self.folder.metrics().has_result():
            logger.info("the run is finished: no requeue")
            return None
        return DelayedSubmission(self)

    # ------------------------------------------------------------ steps

    def _record_start(self, env: JobEnvironment) -> None:
        restart = os.environ.get("SLURM_RESTART_COUNT")
        changes = self._schedule_changes(env.num_tasks)
        extra = {"schedule_changes": changes, "schedule_change_allowed": self.cfg.train.allow_schedule_change} if changes else {}
        record = self.folder.record_start(env.job_id, env.cluster, world_size=env.num_tasks,
                                       slurm_restart=int(restart) if restart else None, **extra)
        logger.info("attempt %d (job %s, requeue %d): starts at step %d; previous stop: %s", record.attempt,
                    env.job_id, record.requeue, record.start_step, record.last_stop)
        if record.requeue > self.cfg.slurm.max_requeues:
            raise RequeueLimitReached(
                f"job {env.job_id} was requeued {record.requeue} times, more than slurm.max_requeues="
                f"{self.cfg.slurm.max_requeues}: stopping. Continue with `python -m launcher resume {self.cfg.run_dir}`")

    def _schedule_changes(self, world: int) -> list[str]:
        """How this attempt's config changes the schedule of the newest checkpoint (lit.train.resume checks it again)."""
        files = checkpoint.list_checkpoints(self.cfg.run_dir)
        if not files or not self.cfg.checkpoint.resume:
            return []
        try:
            state = checkpoint.peek(files[-1])
            saved = checkpoint.saved_config(files[-1], state)
        except (checkpoint.Unreadable, ConfigError):
            return []  # resume skips or refuses it and says why
        return schedule_changes(saved, self.cfg, int(state.get("world_size", world)), world)

    def _doctor(self) -> None:
        checks = run_checks(self.cfg)
        if not ok(checks):
            console.print(report(checks))
            raise DoctorFailed(f"lit doctor failed on {os.uname().nodename} before training: {PreflightFailed(checks)}")

    def _requeue(self, env: JobEnvironment, step: int) -> None:
        requeue(env, self.folder, self.cfg.slurm.max_requeues, f"checkpoint at step {step}", self.cfg.run_dir)

    def _ended(self, env: JobEnvironment) -> None:
        """The run has its result: when it is a sweep's last member to end, rank 0 writes the sweep's report."""
        if env.global_rank != 0:
            return
        try:
            member_ended(self.cfg.run_dir)
        except Exception as err:  # the run's own result stands; `python -m launcher report` can redo it
            logger.error("the sweep report could not be written: %s", err)

    @staticmethod
    def _quiet(env: JobEnvironment) -> None:
        signal.signal(preempt_signal(env), _ignore)


__all__ = ["DoctorFailed", "RequeueLimitReached", "TERM_WAIT_S", "Task", "master_port", "rendezvous_env"]
