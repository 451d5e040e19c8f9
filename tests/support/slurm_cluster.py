"""A throw-away single-node Slurm cluster (munged + slurmctld + slurmd) in a temporary folder, for tests.

Needs the Debian packages ``slurm-wlm`` and ``munge`` and root (slurmd runs jobs as their user and
SlurmUser=root keeps it to one account). :func:`start_cluster` returns the environment that points the
Slurm commands (sbatch, squeue, scontrol) at it, or raises :class:`ClusterUnavailable` saying exactly why
it cannot start; :meth:`SlurmCluster.stop` stops the daemons.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")


class ClusterUnavailable(RuntimeError):
    """Why a test Slurm cluster cannot run here (the message is the skip reason)."""


@dataclasses.dataclass
class SlurmCluster:
    folder: Path
    env: dict[str, str]
    processes: list[subprocess.Popen]
    partition: str = "debug"

    def stop(self) -> None:
        """Cancel what is left, let the jobs finish completing (a job step whose slurmd is gone never ends),
        stop the daemons, then end any process still carrying this cluster's SLURM_CONF (job steps)."""
        if self.processes and all(p.poll() is None for p in self.processes):
            self.run("scancel", "--user", str(os.getuid()), check=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                    break
                time.sleep(0.5)
        self._stop_daemons()
        for pid in self.leftover_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def leftover_pids(self) -> list[int]:
        """Processes (other than this one) whose environment points at this cluster's slurm.conf."""
        marker = f"SLURM_CONF={self.env['SLURM_CONF']}".encode() + b"\0"
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def _stop_daemons(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A requeued job is held back cred_expire + 1 s (Slurm's default 120 s), long enough for the node to forget
# the old launch's revoked credential; a launch in the same second as the revocation is killed ("Job credential
# revoked"). 10 s keeps the tests quick and leaves a loaded 2-core box time to use a fresh credential.
CRED_EXPIRE_S = 10


def slurm_conf(folder: Path, host: str, cpus: int, memory_mb: int, munge_socket: Path) -> str:
    ctld_port, slurmd_port = _free_port(), _free_port()
    return f"""\
ClusterName=tunesmithtest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def start_cluster(folder: Path, timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``folder``; wait until the node is idle."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise ClusterUnavailable(f"Slurm binaries missing ({', '.join(missing)}): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        raise ClusterUnavailable("not root: the test Slurm cluster runs slurmd (which starts jobs) as root")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    munge_socket = folder / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, os.cpu_count() or 1, 2000, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for key_name in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        env.pop(key_name)
    processes: list[subprocess.Popen] = []
    cluster = SlurmCluster(folder, env, processes)

    def daemon(name: str, *cmd: str) -> None:
        log = open(folder / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(0.5)
        if processes[-1].poll() is not None:
            cluster.stop()
            out = (folder / f"{name}.out").read_text(errors="replace")[-1500:]
            raise ClusterUnavailable(f"{name} exited at start (code {processes[-1].returncode}): {out.strip()}\n"
                                     f"{cluster.logs()}")  # fmt: skip

    daemon(
        "munged", "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
        f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munged.log",
        f"--seed-file={folder}/munge/munged.seed",
    )  # fmt: skip
    daemon("slurmctld", "slurmctld", "-D", "-c", "-i", "-f", str(conf))
    daemon("slurmd", "slurmd", "-D", "-f", str(conf), "-N", host)
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        out = cluster.run("sinfo", "-h", "-o", "%T", check=False)
        state = (out.stdout + out.stderr).strip()
        if out.returncode == 0 and state.startswith("idle"):
            return cluster
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.5)
    cluster.stop()
    raise ClusterUnavailable(f"the test Slurm node did not become idle (sinfo: {state!r})\n{cluster.logs()}")
