"""Several hosts: two network namespaces joined by a veth pair, 2 ranks each (gloo over TCP).

Cutting one namespace's link must end the job on the other side with accord's timeout error
(naming the unreachable ranks) instead of a hang. Needs root (CAP_SYS_ADMIN) and ``ip``
(iproute2); skipped otherwise. Only addresses inside the namespaces made here are used
(10.200.<n>.1 and .2).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from launch import WORKER_DIR, _kill_sessions, _worker_env, requires_torch_dist

pytestmark = pytest.mark.mpi

BOUND = 90  # seconds from the cut until the cut-off side has exited


def _ip(*args, ns=None, check=True):
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def two_hosts():
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2)")
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    na, nb = f"accA{tag}", f"accB{tag}"
    va, vb = f"acva{tag}", f"acvb{tag}"
    net = 200 + 0  # 10.200.x.y: x from the pid, so concurrent runs do not collide
    x = os.getpid() % 250
    try:
        r = _ip("netns", "add", na, check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot create network namespaces: {r.stderr.strip()}")
        _ip("netns", "add", nb)
        _ip("link", "add", va, "type", "veth", "peer", "name", vb)
        _ip("link", "set", va, "netns", na)
        _ip("link", "set", vb, "netns", nb)
        for ns, dev, host in ((na, va, 1), (nb, vb, 2)):
            _ip("addr", "add", f"10.{net}.{x}.{host}/24", "dev", dev, ns=ns)
            _ip("link", "set", dev, "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
        yield {"ns": (na, nb), "dev": (va, vb), "addr": (f"10.{net}.{x}.1", f"10.{net}.{x}.2")}
    finally:
        for ns in (na, nb):
            _ip("netns", "del", ns, check=False)


@requires_torch_dist
def test_cut_link_times_out(two_hosts):
    (na, nb), (va, vb), (aa, _) = two_hosts["ns"], two_hosts["dev"], two_hosts["addr"]
    port = 29500 + os.getpid() % 1000
    env = _worker_env("gloo", {"MASTER_ADDR": aa, "MASTER_PORT": str(port),
                               "ACCORD_TIMEOUT": "10", "ACCORD_STALL_WARNING": "5",
                               "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    procs, outs = [], []
    try:
        for rank in range(4):
            ns, dev = (na, va) if rank < 2 else (nb, vb)
            out = tempfile.TemporaryFile()
            outs.append(out)
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(WORKER_DIR / "faults_worker.py"),
                 "long"],
                env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank % 2), GLOO_SOCKET_IFNAME=dev),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

        def text(r):
            outs[r].seek(0)
            return outs[r].read().decode(errors="replace")

        deadline = time.monotonic() + 120
        while "step 20" not in text(0):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                "job did not start:\n" + "\n".join(text(r) for r in range(4))
            time.sleep(0.2)
        _ip("link", "set", vb, "down", ns=nb)  # host B drops off the network
        cut = time.monotonic()
        while any(procs[r].poll() is None for r in (0, 1)) and time.monotonic() - cut < BOUND:
            time.sleep(0.2)
        waited = time.monotonic() - cut
        log = "\n".join(f"--- rank {r} (exit {procs[r].poll()})\n{text(r)[-3000:]}"
                        for r in range(4))
        assert all(procs[r].poll() not in (None, 0) for r in (0, 1)), \
            f"host A's ranks still running {waited:.0f} s after the cut:\n{log}"
        assert "TIMEOUT after" in text(0) + text(1), log
        assert "did not arrive" in text(0) + text(1), log
    finally:
        _kill_sessions([p for p in procs if p.poll() is None], grace=1.0)
        for out in outs:
            out.close()
