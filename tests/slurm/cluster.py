"""A real 2-node SLURM cluster (Debian slurm-wlm 22.05) on this machine, for tests.

Run as root.  :class:`LocalSlurmCluster` starts munged (unless one already
answers), a private MariaDB, slurmdbd, slurmctld and one slurmd per node, all
configured in a scratch directory, and stops every daemon by its PID file.
Clusters on one machine run one at a time (a lock under /run/lock): they share
munged, /etc/hosts and the node names.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
NODES: tuple[str, ...] = ("node1", "node2")
HOSTS_FILE = Path("/etc/hosts")
HOSTS_LINE = "127.0.0.1 node1 node2  # LocalSlurmCluster"
REQUIRED_BINARIES: tuple[str, ...] = (
    "slurmctld", "slurmd", "slurmdbd", "sbatch", "squeue", "scontrol", "sacct",
    "sinfo", "scancel", "munge", "munged", "mariadb-install-db", "mariadb",
)
DB_SERVERS: tuple[str, ...] = ("mariadbd", "mysqld")
MUNGE_RUN_DIR = Path("/run/munge")
LOCK_FILE = Path("/run/lock/local-slurm-cluster.lock")  # one cluster per machine at a time
DB_PASSWORD = "slurm-test"

# slurm.conf and slurmdbd.conf, one setting per whitespace-separated item.  Fields:
# {host} short hostname, {r} scratch dir, {ctld}/{dbd}/{db} ports, {password}.
SLURM_SETTINGS = """
ClusterName=local SlurmctldHost={host}(127.0.0.1) SlurmctldPort={ctld} SlurmUser=root
AuthType=auth/munge CredType=cred/munge AuthInfo=cred_expire=5 MailProg=/bin/true
MpiDefault=none SwitchType=switch/none ProctrackType=proctrack/linuxproc TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd} SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=2
SelectType=select/cons_tres SelectTypeParameters=CR_Core SlurmdParameters=config_overrides
PreemptType=preempt/partition_prio PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal ReturnToService=2 JobRequeue=1 KillWait=5
InactiveLimit=0 MinJobAge=300 StateSaveLocation={r}/state SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log SlurmdLogFile={r}/log/slurmd-%n.log
"""
NODE_LINE = ("NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs=4 "
             "RealMemory=8000 State=UNKNOWN")
PARTITION_LINES = (
    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    "PartitionName=low Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE"
    " GraceTime=20",
    "PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF",
)
SLURMDBD_SETTINGS = """
AuthType=auth/munge DbdAddr=127.0.0.1 DbdHost={host} DbdPort={dbd} SlurmUser=root
PidFile={r}/slurmdbd.pid LogFile={r}/log/slurmdbd.log StorageType=accounting_storage/mysql
StorageHost=127.0.0.1 StoragePort={db} StorageUser=slurm StoragePass={password}
StorageLoc=slurm_acct_db
"""


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster (not root, binaries missing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClusterError(RuntimeError):
    """The cluster failed to start, to run a command, or to stop cleanly."""


def which(name: str) -> str | None:
    """Path of an executable, also searching /usr/sbin and /sbin."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Call ``probe`` until it returns something truthy or ``timeout`` s pass; return
    its last result."""
    deadline = time.monotonic() + timeout
    while not (result := probe()) and time.monotonic() < deadline:
        time.sleep(interval)
    return result


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """``poll``, raising TimeoutError naming ``what`` when nothing truthy came in time."""
    if result := poll(probe, timeout, interval):
        return result
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in socks]
    for sock in socks:
        sock.close()
    return ports


class LocalSlurmCluster:
    """A 2-node SLURM cluster with accounting, configured in a scratch directory."""

    def __init__(self, start_timeout: float = 60.0, keep_scratch: bool = False,
                 lock_timeout: float = 900.0) -> None:
        self.start_timeout = start_timeout
        self.lock_timeout = lock_timeout
        self.keep_scratch = keep_scratch
        self.scratch = Path()
        self.conf_dir = Path()
        self.jobs_dir = Path()
        self._bins: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._pids: dict[str, int] = {}  # daemon name -> PID from its pid file
        self._ports: dict[str, int] = {}
        self._db_proc: subprocess.Popen[bytes] | None = None
        self._hosts_added = False
        self._saved_slurm_conf: str | None = None
        self._env_set = False
        self._lock_fd: int | None = None
        self._active = False

    # ----------------------------------------------------------------- public
    @property
    def env(self) -> dict[str, str]:
        """Environment (a copy, with SLURM_CONF) for subprocesses using this cluster."""
        return dict(self._env)

    @property
    def daemon_pids(self) -> dict[str, int]:
        """PIDs of the daemons this cluster started, by name."""
        return dict(self._pids)

    def __enter__(self) -> LocalSlurmCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start all daemons and wait until both nodes are idle; undo everything on failure."""
        self._check_prerequisites()
        self._active = True
        try:
            self._lock()
            self._prepare_scratch()
            self._start_munge()
            self._add_hosts_line()
            self._start_mariadb()
            self._start_slurm_daemons()
            self._wait_nodes_idle()
        except BaseException:
            logger.exception("slurm cluster start failed; stopping what was started")
            try:
                self.stop()
            except Exception:
                logger.exception("cleanup after the failed start was incomplete")
            raise
        logger.info("slurm cluster up in %s", self.scratch)

    def stop(self) -> None:
        """Cancel jobs, stop daemons by PID file, restore /etc/hosts and SLURM_CONF.

        Safe to call twice and after a failed start; raises :class:`ClusterError`
        if anything could not be cleaned up.
        """
        if not self._active:
            return
        self._active = False
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("draining jobs", self._drain_jobs),
            ("stopping daemons", self._stop_daemons),
            ("killing leftovers", self._kill_leftovers),
            ("restoring /etc/hosts", self._remove_hosts_line),
            ("restoring SLURM_CONF", self._restore_env),
            ("releasing the lock", self._unlock),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep tearing down; report at the end
                logger.exception("%s failed", what)
                errors.append(f"{what}: {exc}")
        if not self.keep_scratch and self.scratch != Path():
            shutil.rmtree(self.scratch, ignore_errors=True)
        if errors:
            raise ClusterError("unclean slurm cluster teardown: " + "; ".join(errors))
        logger.info("slurm cluster stopped")

    def leftover_pids(self) -> list[int]:
        """Live daemon PIDs of this cluster plus processes carrying its SLURM_CONF."""
        pids = {pid for pid in self._pids.values() if pid_alive(pid)}
        if conf := self._env.get("SLURM_CONF"):
            needle = f"SLURM_CONF={conf}".encode()
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) == os.getpid():
                    continue
                try:
                    environ = (entry / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if needle in environ and pid_alive(int(entry.name)):
                    pids.add(int(entry.name))
        return sorted(pids)

    def run(self, *cmd: str, check: bool = True, input_text: str | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command (e.g. a SLURM client) in ``jobs_dir`` with this cluster's env."""
        result = subprocess.run(
            [self._bins.get(cmd[0], cmd[0]), *cmd[1:]], env=self._env, cwd=self.jobs_dir,
            input=input_text, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}): "
                               f"{result.stderr.strip()}")
        return result

    def sbatch(self, script_text: str, *args: str) -> str:
        """Submit a batch script from ``jobs_dir``; return the job id."""
        out = self.run("sbatch", "--parsable", *args, input_text=script_text).stdout
        return out.strip().split(";")[0]

    def job_output(self, job_id: str) -> Path:
        """Default output file (``jobs_dir/slurm-<id>.out``) of a job."""
        return self.jobs_dir / f"slurm-{job_id}.out"

    def squeue(self) -> list[dict[str, str]]:
        """Jobs in the queue, each as {id, partition, name, state, reason}."""
        out = self.run("squeue", "-h", "-o", "%i|%P|%j|%T|%R").stdout
        keys = ("id", "partition", "name", "state", "reason")
        return [dict(zip(keys, line.split("|", 4))) for line in out.splitlines() if line]

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` fields of a job (empty when unknown)."""
        result = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", result.stdout)) if result.returncode == 0 else {}

    def wait_job(self, job_id: str, states: Iterable[str], timeout: float = 60.0) -> str:
        """Wait until a job is in one of ``states`` (slurmctld's view, else sacct's)."""
        wanted, seen = set(states), [""]

        def probe() -> bool:
            seen[0] = self.job_info(job_id).get("JobState") or self.sacct_state(job_id) or ""
            return seen[0] in wanted

        if not poll(probe, timeout, interval=0.2):
            raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout}s "
                               f"(state {seen[0]!r})\n{self.log_tails()}")
        return seen[0]

    def sacct_state(self, job_id: str) -> str | None:
        """Latest accounting state of a job's allocation (``None`` if not recorded)."""
        out = self.run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State").stdout
        states = [line.split()[0] for line in out.splitlines() if line.strip()]
        return states[-1] if states else None

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every daemon log, for error messages."""
        if self.scratch == Path():
            return ""
        logs = [*sorted((self.scratch / "log").glob("*")), self.scratch / "mysql" / "mariadb.log"]
        parts = []
        for log in logs:
            if log.is_file() and log.stat().st_size:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log}\n" + "\n".join(tail))
        return "\n".join(parts)

    # ---------------------------------------------------------------- startup
    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("a local slurm cluster needs root")
        found = {name: which(name) for name in REQUIRED_BINARIES}
        missing = [name for name, path in found.items() if path is None]
        db_server = next((path for path in map(which, DB_SERVERS) if path), None)
        if db_server is None:
            missing.append("mariadbd/mysqld")
        if missing:
            raise ClusterUnavailable(f"missing binaries: {', '.join(missing)} "
                                     "(install them with .ci/slurm-packages.sh)")
        self._bins = {name: str(path) for name, path in found.items()}
        self._bins["mariadbd"] = str(db_server)

    def _lock(self) -> None:
        """Wait (up to ``lock_timeout``) until no other cluster runs on this machine:
        they would share munged, /etc/hosts and the node names."""
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)

        def try_lock() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not try_lock():
            logger.info("waiting for another local slurm cluster to stop (%s)", LOCK_FILE)
            if not poll(try_lock, self.lock_timeout, 0.5):
                os.close(fd)
                raise ClusterError(f"another local slurm cluster held {LOCK_FILE} "
                                   f"for {self.lock_timeout}s")
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _prepare_scratch(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="slurm-test-"))
        self.scratch.chmod(0o755)  # the mysql user must reach its datadir
        self.conf_dir, self.jobs_dir = self.scratch / "etc", self.scratch / "jobs"
        for sub in ("etc", "jobs", "log", "state", *(f"spool/{n}" for n in NODES)):
            (self.scratch / sub).mkdir(parents=True)
        self._ports = dict(zip(("db", "dbd", "ctld", *NODES), _free_ports(3 + len(NODES))))
        conf = str(self.conf_dir / "slurm.conf")
        self._env = {**os.environ, "SLURM_CONF": conf}
        self._saved_slurm_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = conf  # in-process users (submitit) call sbatch/sacct
        self._env_set = True

    def _munge_works(self) -> bool:
        return subprocess.run([self._bins["munge"], "-n"], capture_output=True).returncode == 0

    def _start_munge(self) -> None:
        if self._munge_works():
            logger.info("munged already running; reusing it")
            return
        MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
        self._daemon("munged", MUNGE_RUN_DIR / "munged.pid",
                     ["runuser", "-u", "munge", "--", self._bins["munged"], "--force"])
        if not poll(self._munge_works, 10):
            raise ClusterError("munged started but `munge -n` still fails")

    def _add_hosts_line(self) -> None:
        text = HOSTS_FILE.read_text()
        if any(line.split()[1:3] == list(NODES) for line in text.splitlines()
               if not line.lstrip().startswith("#")):
            return  # already resolvable (e.g. a line left by a killed run)
        with HOSTS_FILE.open("a") as fh:  # in place: /etc/hosts may be a bind mount
            fh.write(("\n" if text and not text.endswith("\n") else "") + HOSTS_LINE + "\n")
        self._hosts_added = True

    def _start_mariadb(self) -> None:
        db_dir = self.scratch / "mysql"  # owned by the DB user: data, socket, pid, log
        datadir, sock, pid_file = db_dir / "data", db_dir / "mysql.sock", db_dir / "mysqld.pid"
        try:
            user = pwd.getpwnam("mysql").pw_name
        except KeyError:
            user = "root"
        datadir.mkdir(parents=True)
        for path in (db_dir, datadir):
            shutil.chown(path, user)
        init = subprocess.run(
            [self._bins["mariadb-install-db"], "--no-defaults", f"--datadir={datadir}",
             f"--user={user}", "--skip-test-db", "--auth-root-authentication-method=socket"],
            capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {init.stderr[-2000:]}")
        with (self.scratch / "log" / "mariadbd.out").open("wb") as out:
            self._db_proc = subprocess.Popen(
                [self._bins["mariadbd"], "--no-defaults", f"--datadir={datadir}",
                 f"--socket={sock}", f"--port={self._ports['db']}", "--bind-address=127.0.0.1",
                 f"--pid-file={pid_file}", f"--user={user}", "--skip-name-resolve",
                 f"--log-error={db_dir / 'mariadb.log'}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._pids["mariadbd"] = self._wait_pid_file("mariadbd", pid_file)
        sql = "".join(f"CREATE USER 'slurm'@'{host}' IDENTIFIED BY '{DB_PASSWORD}';"
                      f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';"
                      for host in ("127.0.0.1", "localhost"))
        cmd = [self._bins["mariadb"], "--no-defaults", f"--socket={sock}", "-u", "root",
               "-e", sql]
        if not poll(lambda: subprocess.run(cmd, capture_output=True).returncode == 0, 30, 0.2):
            raise ClusterError(f"cannot create the slurm DB user\n{self.log_tails()}")

    def _start_slurm_daemons(self) -> None:
        host = socket.gethostname().split(".")[0]
        fields = {"host": host, "r": self.scratch, "password": DB_PASSWORD, **self._ports}
        lines = [*SLURM_SETTINGS.format(**fields).split(),
                 *(NODE_LINE.format(name=n, host=host, port=self._ports[n]) for n in NODES),
                 *PARTITION_LINES]
        (self.conf_dir / "slurm.conf").write_text("\n".join(lines) + "\n")
        dbd_conf = self.conf_dir / "slurmdbd.conf"  # slurmdbd looks next to SLURM_CONF
        dbd_conf.touch(mode=0o600)
        dbd_conf.write_text("\n".join(SLURMDBD_SETTINGS.format(**fields).split()) + "\n")
        conf = self._env["SLURM_CONF"]
        self._daemon("slurmdbd", self.scratch / "slurmdbd.pid", [self._bins["slurmdbd"]])
        self._wait_port("slurmdbd", self._ports["dbd"])
        self._daemon("slurmctld", self.scratch / "slurmctld.pid",
                     [self._bins["slurmctld"], "-f", conf])
        self._wait_port("slurmctld", self._ports["ctld"])
        for node in NODES:
            self._daemon(f"slurmd-{node}", self.scratch / f"slurmd-{node}.pid",
                         [self._bins["slurmd"], "-f", conf, "-N", node])

    def _wait_nodes_idle(self) -> None:
        def states() -> dict[str, str]:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout
            return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

        if not poll(lambda: all(states().get(n) == "idle" for n in NODES),
                    self.start_timeout, 0.2):
            raise ClusterError(f"nodes not idle after {self.start_timeout}s: {states()}\n"
                               + self.log_tails())

    def _daemon(self, name: str, pid_file: Path, cmd: list[str]) -> None:
        """Run a self-daemonising program; record the PID from its pid file."""
        with (self.scratch / "log" / f"{name}.out").open("wb") as out:
            res = subprocess.run(cmd, env=self._env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, timeout=60)
        if res.returncode != 0:
            raise ClusterError(f"{name} exited with {res.returncode}\n{self.log_tails()}")
        self._pids[name] = self._wait_pid_file(name, pid_file)

    def _wait_pid_file(self, name: str, pid_file: Path) -> int:
        def live_pid() -> int:
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return 0
            return pid if pid_alive(pid) else 0

        pid = poll(live_pid, 15, 0.05)
        if not pid:
            raise ClusterError(f"{name}: no live pid in {pid_file}\n{self.log_tails()}")
        logger.debug("%s running as pid %d", name, pid)
        return pid

    def _wait_port(self, name: str, port: int) -> None:
        def ready_or_dead() -> bool:
            with socket.socket() as sock:
                listening = sock.connect_ex(("127.0.0.1", port)) == 0
            return listening or not pid_alive(self._pids[name])

        if not poll(ready_or_dead, 30, 0.05) or not pid_alive(self._pids[name]):
            raise ClusterError(f"{name} is not listening on port {port}\n{self.log_tails()}")

    # --------------------------------------------------------------- teardown
    def _drain_jobs(self, timeout: float = 60.0) -> None:
        """Cancel all jobs; wait for an empty queue and no step sockets in the spools."""
        if "slurmctld" not in self._pids or not pid_alive(self._pids["slurmctld"]):
            return
        if ids := [job["id"] for job in self.squeue()]:
            self.run("scancel", *ids, check=False)
        spools = [self.scratch / "spool" / node for node in NODES]

        def drained() -> bool:
            return not self.squeue() and not any(
                f.is_socket() for spool in spools for f in spool.iterdir())

        if not poll(drained, timeout):
            raise ClusterError(f"jobs did not drain in {timeout}s: {self.squeue()}")

    def _stop_daemons(self) -> None:
        """Stop the daemons in reverse start order, by the PIDs from their pid files."""
        survivors = [name for name in reversed(list(self._pids))
                     if not self._kill(name, self._pids[name])]
        if self._db_proc is not None:
            self._db_proc.poll()  # reap our child
            self._db_proc = None
        if survivors:
            raise ClusterError(f"daemons survived SIGKILL: {survivors}")

    def _kill_leftovers(self) -> None:
        """Kill job processes (they carry our SLURM_CONF) that outlived the daemons."""
        for pid in self.leftover_pids():
            logger.warning("killing leftover process %d of the slurm cluster", pid)
            self._kill(f"leftover {pid}", pid, grace=1.0)
        if alive := self.leftover_pids():
            raise ClusterError(f"processes still alive: {alive}")

    def _kill(self, name: str, pid: int, grace: float = 30.0) -> bool:
        """SIGTERM ``pid``, SIGKILL after ``grace`` s; True once it is gone."""
        def gone() -> bool:
            if self._db_proc is not None and self._db_proc.pid == pid:
                self._db_proc.poll()  # reap our own child so it is not a zombie
            return not pid_alive(pid)

        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if gone():
                return True
            logger.debug("sending %s to %s (pid %d)", sig.name, name, pid)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            if poll(gone, wait, 0.05):
                return True
        return False

    def _remove_hosts_line(self) -> None:
        if self._hosts_added:
            lines = HOSTS_FILE.read_text().splitlines(keepends=True)
            with HOSTS_FILE.open("w") as fh:  # rewrite in place
                fh.writelines(line for line in lines if line.rstrip("\n") != HOSTS_LINE)
            self._hosts_added = False

    def _restore_env(self) -> None:
        if self._env_set:
            if self._saved_slurm_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self._saved_slurm_conf
            self._env_set = False
