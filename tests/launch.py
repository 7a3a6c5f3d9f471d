"""Launch worker scripts as distributed jobs from pytest: ``run_mpi`` and ``run_torch``.

Worker scripts live in ``tests/mpi/`` and use ``tests/mpi/_worker.py`` (``worker_main``,
``setup``, ``check``...). A script path may be given relative to ``tests/mpi``::

    from launch import requires_mpi, run_mpi

    @requires_mpi
    def test_something():
        run_mpi("something_worker.py", 4, args=("--flag",))

Both launchers capture the job's combined output, fail the calling test (``pytest.fail``
with the output tail) on a non-zero exit or a timeout, and kill every process of the job
when it times out, so a stuck job never hangs the test session. ``check=False`` returns the
:class:`LaunchResult` instead of failing. Workers get ``OMP_NUM_THREADS=1`` (oversubscribed
ranks must not each start a thread team), ``PYTHONUNBUFFERED=1`` and
``ACCORD_TEST_BACKEND`` (``mpi`` or the torch backend), which ``_worker.setup()`` reads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

WORKER_DIR = Path(__file__).resolve().parent / "mpi"
DEFAULT_TIMEOUT = 120.0
_TAIL_CHARS = 8000


@dataclasses.dataclass
class LaunchResult:
    returncode: int  # mpirun's status; run_torch: the first failing rank's, 124 on timeout
    output: str  # stdout and stderr of every rank, interleaved (run_torch: rank by rank)
    timed_out: bool
    wall_s: float


def find_mpirun() -> str | None:
    """mpirun next to the running interpreter (a venv with Open MPI), else on PATH."""
    for name in ("mpirun", "mpiexec"):
        sibling = Path(sys.executable).parent / name
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return shutil.which("mpirun") or shutil.which("mpiexec")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


requires_mpi = pytest.mark.skipif(
    find_mpirun() is None or not _has_module("mpi4py"),
    reason="needs mpirun and mpi4py",
)
requires_torch_dist = pytest.mark.skipif(
    not _has_module("torch"), reason="needs torch (torch.distributed with gloo)"
)


@functools.lru_cache(maxsize=None)
def _is_open_mpi(mpirun: str) -> bool:
    try:
        out = subprocess.run(
            [mpirun, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Open MPI" in out or "OpenRTE" in out or "PRRTE" in out


def _accord_root() -> str | None:
    """Directory this process imports ``accord`` from, unless it is an installed copy
    (tests/conftest.py puts a source checkout's python/ on sys.path; workers need it too)."""
    try:
        spec = importlib.util.find_spec("accord")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]).resolve().parent
    return None if root.name in ("site-packages", "dist-packages") else str(root)


def _worker_env(backend: str, extra: dict | None) -> dict:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", ACCORD_TEST_BACKEND=backend)
    root = _accord_root()
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root is not None and root not in {str(Path(p).resolve()) for p in paths}:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    if extra:
        env.update(extra)
    return env


def _script_path(script) -> str:
    p = Path(script)
    if not p.is_absolute() and not p.exists():
        p = WORKER_DIR / p
    if not p.is_file():
        raise FileNotFoundError(f"worker script not found: {script}")
    return str(p)


def _session_pids(sid: int) -> list[int]:
    """Processes in session ``sid`` (Linux): mpirun's ranks get their own process groups
    but stay in the launcher's session."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            # Fields after the parenthesised command name: state ppid pgrp session ...
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _kill_sessions(procs, grace: float = 3.0, dump_stacks: bool = False,
                   leaders_are_workers: bool = True) -> None:
    """Terminate each ``proc`` (a session leader) and everything else in its session.

    ``dump_stacks``: first send SIGUSR1 to the workers, so those run by
    ``_worker.worker_main`` print where they are stuck (not to mpirun: set
    ``leaders_are_workers=False`` when the leader is the launcher).
    """
    if dump_stacks:
        for proc in procs:
            for pid in _session_pids(proc.pid):
                if pid != proc.pid or leaders_are_workers:
                    try:
                        os.kill(pid, signal.SIGUSR1)
                    except (ProcessLookupError, PermissionError):
                        pass
        time.sleep(1.0)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # lets mpirun tear its ranks down cleanly
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        for pid in _session_pids(proc.pid) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()


def _finish(result: LaunchResult, what: str, check: bool) -> LaunchResult:
    if check and (result.timed_out or result.returncode != 0):
        why = (
            f"timed out after {result.wall_s:.0f} s"
            if result.timed_out
            else f"exited with status {result.returncode}"
        )
        tail = result.output[-_TAIL_CHARS:]
        pytest.fail(f"{what} {why}; output tail:\n{tail}", pytrace=False)
    return result


def run_mpi(
    script,
    nprocs: int,
    args=(),
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict | None = None,
    mpirun_args=(),
) -> LaunchResult:
    """Run ``python script *args`` on ``nprocs`` ranks with mpirun.

    Open MPI gets ``--oversubscribe --bind-to none`` (and ``--allow-run-as-root`` as root).
    """
    mpirun = find_mpirun()
    if mpirun is None:
        pytest.skip("mpirun not found")
    cmd = [mpirun, "-np", str(nprocs)]
    if _is_open_mpi(mpirun):
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    cmd += [*mpirun_args, sys.executable, _script_path(script), *map(str, args)]
    extra = dict(env or {})
    if os.geteuid() == 0:
        extra.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        extra.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    full_env = _worker_env("mpi", extra)

    start = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_sessions([proc], dump_stacks=True, leaders_are_workers=False)
        except BaseException:  # e.g. Ctrl-C or pytest-timeout: never leave the job behind
            _kill_sessions([proc], grace=1.0)
            raise
        out.seek(0)
        output = out.read().decode(errors="replace")
    result = LaunchResult(proc.returncode, output, timed_out, time.monotonic() - start)
    return _finish(result, f"mpirun -np {nprocs} {Path(script).name}", check)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch(
    script,
    nprocs: int,
    args=(),
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict | None = None,
    backend: str = "gloo",
) -> LaunchResult:
    """Run ``python script *args`` as ``nprocs`` torch.distributed processes on this host.

    Spawns the processes directly with the env:// rendezvous variables (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), which
    starts faster than torchrun. When one rank fails the others are killed at once.
    """
    port = free_port()
    path = _script_path(script)
    extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **(env or {})}
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        extra.setdefault("GLOO_SOCKET_IFNAME", "lo")  # single host: skip interface guessing
    base_env = _worker_env(backend, extra)

    start = time.monotonic()
    outs, procs = [], []
    timed_out, failed_rc = False, 0
    try:
        for r in range(nprocs):
            rank_env = dict(
                base_env,
                RANK=str(r),
                WORLD_SIZE=str(nprocs),
                LOCAL_RANK=str(r),
                LOCAL_WORLD_SIZE=str(nprocs),
            )
            out = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(
                    [sys.executable, path, *map(str, args)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=rank_env,
                    start_new_session=True,
                )
            except BaseException:
                out.close()
                raise
            outs.append(out)
            procs.append(proc)
        deadline = start + timeout
        while True:
            codes = [p.poll() for p in procs]
            bad = [c for c in codes if c not in (None, 0)]
            if bad or all(c is not None for c in codes):
                failed_rc = bad[0] if bad else 0
                break
            if time.monotonic() > deadline:
                timed_out, failed_rc = True, 124
                break
            time.sleep(0.02)
    finally:
        _kill_sessions([p for p in procs if p.poll() is None], grace=1.0, dump_stacks=timed_out)
        output = []
        for r, out in enumerate(outs):
            out.seek(0)
            text = out.read().decode(errors="replace")
            out.close()
            output.append(f"----- rank {r} (exit {procs[r].returncode}) -----\n{text}")
    result = LaunchResult(failed_rc, "\n".join(output), timed_out, time.monotonic() - start)
    return _finish(result, f"torch.distributed ({backend}) x{nprocs} {Path(script).name}", check)
