"""Faults end the job with an error: stall inspector, uncaught exceptions, ranks that leave.

**Stall inspector.** One daemon thread per process looks at every communicator's progress record
(``accord.comm.guard``) every ``min(1 s, limit/20)``. An operation still running after
``settings.stall_warning()`` seconds (ACCORD_STALL_WARNING, default 60) is reported on stderr
together with what every rank is doing; after ``settings.timeout()`` seconds (ACCORD_TIMEOUT,
default 300) the report becomes an error and the job is aborted (``Communicator.abort``): a rank
stuck inside MPI or gloo cannot be unblocked. The hot path pays nothing for this (the guard's
record only); ranks talk to each other only when an operation is already late:

* MPI: the watchdog thread owns a private duplicate of the communicator passed to
  :func:`install` and keeps one receive posted on it. A late rank sends every peer a query; each
  peer's watchdog thread answers with its own records (needs ``MPI_THREAD_MULTIPLE``, mpi4py's
  default; with a lower level the report has this rank's view only). A peer that does not answer
  is named as such (process stopped, or its network is down).
* torch.distributed: each rank's records go to the default group's Store (under
  ``accord/watchdog/<n>/``), refreshed at most once per poll while they change, from a separate
  thread so that a lost Store never stalls the inspector.

**Uncaught exceptions.** :func:`install` (run by ``accord.init()``) chains ``sys.excepthook`` and
``threading.excepthook``: after the usual traceback, the rank says which exception ended it and
aborts the job, so the other ranks stop at once instead of waiting in their next collective.
:func:`uninstall` (``accord.shutdown()``) restores the previous hooks.

**Ranks that leave.** A process that exits normally while accord is initialised tells the
others (an ``atexit`` handler, which runs before mpi4py finalises MPI): a peer that is then
waiting in an operation on a communicator of the full job (or enters one) for more than a couple
of poll intervals aborts the job with an error naming the rank that left and its last operation.
When every rank exits, each waits for the others' notices (at most ``min(10 s, stall
warning)``) and nothing is reported.
"""
from __future__ import annotations

import atexit
import json
import os
import pickle
import socket
import sys
import threading
import time
import weakref

from .. import settings

__all__ = ["install", "uninstall", "watch", "installed"]

_HOST = socket.gethostname()
_REPLY_WAIT = 3.0  # seconds the inspector waits for peers' answers before reporting without them
_EXIT_WAIT_MAX = 10.0  # at exit, seconds to wait for the other ranks' exit notices
_MAX_LINES = 32  # ranks listed in full in a report

_watched: "weakref.WeakSet" = weakref.WeakSet()
_lock = threading.Lock()
_thread = None
_wake = threading.Event()


def _poll_interval() -> float:
    limits = [x for x in (settings.stall_warning(), settings.timeout()) if x > 0]
    return min(1.0, max(0.05, min(limits) / 20)) if limits else 1.0


def watch(comm) -> None:
    """Put ``comm`` (which has a guard) under the stall inspector; starts the thread once."""
    global _thread
    with _lock:
        _watched.add(comm)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="accord-watchdog", daemon=True)
            _thread.start()


# ---------------------------------------------------------------------------------------------
# process state (what the boards publish)

_state = None  # _Installed while accord.init() is in force


def _records() -> list:
    """Every watched communicator's record, the installed (job-wide) one first."""
    out = []
    main = _state.comm if _state is not None else None
    comms = [c for c in list(_watched) if c._guard is not None and not c.closed]
    comms.sort(key=lambda c: c is not main)
    for c in comms[:6]:
        snap = c._guard.snapshot()
        snap["comm"] = "job" if c is main else c._guard.label
        snap["rank"] = c.rank
        out.append(snap)
    return out


def _my_state(exited: bool = False) -> dict:
    return {"host": _HOST, "pid": os.getpid(), "records": _records(), "exited": exited,
            "wall": time.time()}


def _job_record(state) -> dict | None:
    for r in state.get("records", ()):
        if r.get("comm") == "job":
            return r
    return None


def _describe_rank(rank: int, state, my_seq: int | None) -> tuple[str, bool]:
    """One report line for ``rank`` and whether it has arrived in operation ``my_seq``."""
    if state is None:
        return (f"rank {rank}: no answer (process stopped or busy without releasing the GIL, or "
                f"its network is down)", False)
    age = max(0.0, time.time() - state.get("wall", time.time()))
    head = f"rank {rank} ({state.get('host')}, pid {state.get('pid')})"
    if state.get("exited"):
        rec = _job_record(state)
        last = f"#{rec['seq']} {rec['what']}" if rec and rec["what"] else "no operation"
        return f"{head}: EXITED the program (normal exit) after {last}", False
    rec = _job_record(state)
    if rec is None:
        recs = state.get("records") or []
        rec = recs[0] if recs else None
    if rec is None or rec["what"] is None:
        return f"{head}: has not called any operation", False
    for_s = (rec["for_s"] or 0.0) + age
    if rec["inside"]:
        arrived = my_seq is None or rec["seq"] == my_seq
        return f"{head}: inside #{rec['seq']} {rec['what']} for {for_s:.1f} s", arrived
    return (f"{head}: not in an operation; last #{rec['seq']} {rec['what']}, finished "
            f"{for_s:.1f} s ago", False)


# ---------------------------------------------------------------------------------------------
# boards: how ranks learn about each other


class _Board:
    rank = 0
    size = 1

    def poll(self) -> None:
        """Serve peers and collect answers (watchdog thread)."""

    def ask(self) -> None:
        """Start collecting every peer's state."""

    def answers(self) -> dict:
        return {}

    def exited(self) -> dict:
        return {}

    def announce_abort(self, message: str) -> None:
        pass

    def leave(self, wait: float) -> None:
        """At exit: tell the peers, wait up to ``wait`` s for theirs (main thread)."""

    def close(self) -> None:
        pass


_QUERY, _REPLY, _EXIT = 1, 2, 3


class _MPIBoard(_Board):
    """Queries and answers over a private duplicate, only from the watchdog thread (and from
    the exiting main thread once the watchdog thread has stopped)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self._side = comm.mpi_comm.Dup()
        self.rank, self.size = self._side.Get_rank(), self._side.Get_size()
        self._buf = bytearray(1 << 16)
        self._req = self._side.Irecv([self._buf, MPI.BYTE], MPI.ANY_SOURCE, MPI.ANY_TAG)
        self._sends: list = []
        self._answers: dict = {}
        self._exited: dict = {}
        self._closed = False
        self._mx = threading.Lock()  # close() (main thread) vs poll() (watchdog thread)

    def _send(self, obj, dest, tag) -> None:
        data = pickle.dumps(obj)
        if len(data) > len(self._buf):
            data = pickle.dumps({"host": _HOST, "pid": os.getpid(), "records": [],
                                 "exited": obj.get("exited", False), "wall": time.time()})
        self._sends.append((self._side.Isend([data, self._MPI.BYTE], dest, tag), data))

    def poll(self) -> None:
        with self._mx:
            if not self._closed:
                self._poll()

    def _poll(self) -> None:
        MPI = self._MPI
        st = MPI.Status()
        while self._req.Test(st):
            src, tag = st.Get_source(), st.Get_tag()
            try:
                msg = pickle.loads(bytes(self._buf[:st.Get_count(MPI.BYTE)]))
            except Exception:
                msg = None
            self._req = self._side.Irecv([self._buf, MPI.BYTE], MPI.ANY_SOURCE, MPI.ANY_TAG)
            if tag == _QUERY:
                self._send(_my_state(), src, _REPLY)
            elif tag == _REPLY and isinstance(msg, dict):
                self._answers[src] = msg
            elif tag == _EXIT and isinstance(msg, dict):
                self._exited[src] = msg
                self._answers[src] = msg
        self._sends = [(r, d) for r, d in self._sends if not r.Test()]

    def ask(self) -> None:
        with self._mx:
            if self._closed:
                return
            self._answers = {r: s for r, s in self._exited.items()}
            for r in range(self.size):
                if r != self.rank and r not in self._exited:
                    self._send(None, r, _QUERY)

    def answers(self) -> dict:
        return dict(self._answers)

    def exited(self) -> dict:
        return dict(self._exited)

    def leave(self, wait: float) -> None:
        me = _my_state(exited=True)
        with self._mx:
            if self._closed:
                return
            for r in range(self.size):
                if r != self.rank:
                    self._send(me, r, _EXIT)
        deadline = time.monotonic() + wait
        while len(self._exited) < self.size - 1 and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.01)
        self.poll()

    def close(self) -> None:
        with self._mx:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        MPI = self._MPI
        if MPI.Is_finalized():
            return
        try:
            self._req.Cancel()
            self._req.Wait()
        except MPI.Exception:
            pass
        # Sends still in flight (to a peer that is gone) are left to MPI_Finalize / abort.
        if all(r.Test() for r, _ in self._sends):
            self._side.Free()


class _StoreBoard(_Board):
    """Records in the torch.distributed Store. All Store I/O runs on its own thread: a Store
    whose host is gone blocks for the Store's timeout, which must not stall the inspector."""

    _generation = 0

    def __init__(self, comm):
        import torch.distributed as dist

        _StoreBoard._generation += 1  # init() is collective: the same on every rank
        base = dist.distributed_c10d._get_default_store()
        self._store = dist.PrefixStore(f"accord/watchdog/{_StoreBoard._generation}/", base)
        self._global = list(getattr(comm, "_global", range(comm.size)))
        self.rank, self.size = comm.rank, comm.size
        self._answers: dict = {}
        self._exited: dict = {}
        self._asked = False
        self._published = None
        self._leaving = False
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="accord-watchdog-store",
                                        daemon=True)
        self._publish()
        self._thread.start()

    def _key(self, r) -> str:
        return f"state/{self._global[r]}"

    def _publish(self, force=False) -> None:
        st = _my_state(exited=self._leaving)
        # Durations change on every read: publish when anything else changed (a reader adds
        # the record's age, from "wall", to its durations).
        sig = json.dumps([[{k: v for k, v in r.items() if k != "for_s"} for r in st["records"]],
                          st["exited"]], default=str, sort_keys=True)
        if force or sig != self._published:
            self._store.set(self._key(self.rank), json.dumps(st, default=str))
            self._published = sig

    def _read_peers(self) -> None:
        got = {}
        for r in range(self.size):
            if r == self.rank:
                continue
            k = self._key(r)
            if self._store.check([k]):
                got[r] = json.loads(self._store.get(k))
        self._answers = got
        self._exited = {r: s for r, s in got.items() if s.get("exited")}

    def _run(self) -> None:
        while not self._stop.wait(_poll_interval()):
            try:
                self._publish()
                if self._store.check(["abort"]):
                    msg = self._store.get("abort").decode(errors="replace")
                    sys.stderr.write(f"accord: rank {self.rank}: ending: {msg}\n")
                    sys.stderr.flush()
                    os._exit(1)
                if self._asked or _pending_for() > 2 * _poll_interval():
                    self._asked = False
                    self._read_peers()
            except Exception as e:  # the Store's host is gone, or a timeout: keep inspecting
                self._error = e
                time.sleep(_poll_interval())

    def ask(self) -> None:
        self._asked = True

    def answers(self) -> dict:
        return dict(self._answers)

    def exited(self) -> dict:
        return dict(self._exited)

    def announce_abort(self, message: str) -> None:
        _bounded(lambda: self._store.set("abort", message), 2.0)

    def leave(self, wait: float) -> None:
        self._leaving = True
        self._stop.set()
        self._thread.join(2.0)

        def tell_and_wait():
            self._publish(force=True)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self._read_peers()
                if len(self._exited) == self.size - 1:
                    return
                time.sleep(0.05)

        _bounded(tell_and_wait, wait + 2.0)

    def close(self) -> None:
        self._stop.set()


def _bounded(fn, seconds: float) -> None:
    """Run ``fn`` on a daemon thread for at most ``seconds`` (Store calls may block)."""
    t = threading.Thread(target=lambda: _quiet(fn), daemon=True)
    t.start()
    t.join(seconds)


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# the inspector


_reported: dict = {}  # id(guard) -> (seq, "warned" | "asked-timeout", when)


def _pending_for() -> float:
    """Seconds the job-wide communicator's current operation has been running (0: none)."""
    st = _state
    if st is None or st.comm._guard is None:
        return 0.0
    g = st.comm._guard
    t = g.t_start
    return time.monotonic() - t if g.owner is not None and t is not None else 0.0


def _report(comm, snap, board, title: str, tail: str) -> str:
    g = comm._guard
    job = _state is not None and comm is _state.comm
    my_seq = snap["seq"] if job else None
    lines = [f"accord: rank {comm.rank} ({_HOST}): {title}: operation #{snap['seq']} "
             f"{snap['what']} on {'the job communicator' if job else g.label}"]
    if board is not None and board.size > 1:
        peers = board.answers()
        me = {**_my_state(), "wall": time.time()}
        rows, missing = [], []
        for r in range(board.size):
            text, arrived = _describe_rank(r, me if r == board.rank else peers.get(r), my_seq)
            rows.append(text)
            if not arrived:
                missing.append(r)
        if job:
            lines.append(f"  ranks that did not arrive: {missing if missing else 'none'}")
        lines += ["  " + t for t in rows[:_MAX_LINES]]
        if len(rows) > _MAX_LINES:
            lines.append(f"  ... {len(rows) - _MAX_LINES} more ranks")
    else:
        lines.append("  (this rank's view only: accord.init() sets up the cross-rank report)")
    lines.append(tail)
    return "\n".join(lines)


def _board_for(comm):
    st = _state
    return st.board if st is not None else None


def _abort(comm, message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    board = _board_for(comm)
    if board is not None:
        board.announce_abort(message.splitlines()[0])
    comm.abort(1)


def _inspect(comm, now: float) -> None:
    g = comm._guard
    if g is None or g.owner is None or g.t_start is None:
        return
    pending = now - g.t_start
    warn, limit = settings.stall_warning(), settings.timeout()
    key = id(g)
    seq = g.seq
    prev = _reported.get(key)
    if prev is not None and prev[0] != seq:
        prev = None
    board = _board_for(comm)
    interval = _poll_interval()

    # A rank that left the program never joins another operation of the whole job.
    if board is not None and comm.size == board.size and pending > 2 * interval + 0.5:
        gone = board.exited()
        if gone:
            if prev is None or prev[1] != "asked-exit":
                board.ask()  # the report says what the other ranks are doing
                _reported[key] = (seq, "asked-exit", now)
                return
            if now - prev[2] < min(_REPLY_WAIT, max(2 * interval, 0.5)) and \
                    len(board.answers()) < board.size - 1:
                return
            snap = g.snapshot()
            names = ", ".join(str(r) for r in sorted(gone))
            _abort(comm, _report(
                comm, snap, board, f"rank(s) {names} left the program while this rank waits",
                f"aborting the job: rank(s) {names} exited (normally) while accord was "
                "initialised and the others still communicate. Make every rank run the same "
                "number of collectives (e.g. the same number of steps; pad or drop uneven "
                "data), and call accord.shutdown() on every rank at the end."))
            return

    if limit > 0 and pending > limit:
        if prev is None or prev[1] != "asked-timeout":
            if board is not None:
                board.ask()
            _reported[key] = (seq, "asked-timeout", now)
            return
        if now - prev[2] < min(_REPLY_WAIT, max(2 * interval, 0.5)) and \
                len(board.answers() if board else {}) < (board.size - 1 if board else 0):
            return  # give the peers a moment to answer
        snap = g.snapshot()
        _abort(comm, _report(
            comm, snap, board, f"TIMEOUT after {pending:.1f} s (ACCORD_TIMEOUT={limit:g})",
            "aborting the job: a rank stuck inside the transport cannot be unblocked. Find out "
            "why the ranks above did not arrive (a crash, a hang, different control flow); "
            "if the operation is legitimately this slow, raise ACCORD_TIMEOUT "
            "(accord.settings.set_timeout)."))
        return

    if warn > 0 and pending > warn and (limit <= 0 or warn < limit):
        if prev is None:
            if board is not None:
                board.ask()
            _reported[key] = (seq, "asked-warning", now)
        elif prev[1] == "asked-warning" and (
                now - prev[2] >= min(_REPLY_WAIT, max(2 * interval, 0.5))
                or board is None or len(board.answers()) >= board.size - 1):
            _reported[key] = (seq, "warned", now)
            sys.stderr.write(_report(
                comm, g.snapshot(), board, f"STALL WARNING: not completed after {pending:.1f} s",
                f"  (the job goes on; it is aborted after ACCORD_TIMEOUT={limit:g} s)"
                if limit > 0 else "  (no timeout: ACCORD_TIMEOUT=0)") + "\n")
            sys.stderr.flush()


def _run() -> None:
    while True:
        interval = _poll_interval()
        time.sleep(interval)
        st = _state
        try:
            if st is not None and st.board is not None:
                st.board.poll()
            now = time.monotonic()
            for comm in list(_watched):
                if not comm.closed:
                    _inspect(comm, now)
        except Exception as e:  # the inspector must survive anything (a torn record...)
            sys.stderr.write(f"accord: watchdog error (ignored): {type(e).__name__}: {e}\n")


# ---------------------------------------------------------------------------------------------
# install / uninstall (accord.init / accord.shutdown)


class _Installed:
    def __init__(self, comm, board):
        self.comm, self.board = comm, board


def _make_board(comm):
    if comm.size == 1:
        return None
    if getattr(comm, "mpi_comm", None) is not None:
        from mpi4py import MPI

        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            return None  # the watchdog thread may not call MPI: this rank's view only
        return _MPIBoard(comm)
    if type(comm).__module__.endswith("torch_dist"):
        try:
            return _StoreBoard(comm)
        except Exception:  # no default Store (a custom init): this rank's view only
            return None
    return None


def _fatal(kind: str, exc_type, exc, thread_name: str) -> None:
    st = _state
    if st is None or issubclass(exc_type, SystemExit):
        return
    comm = st.comm
    text = f"{exc_type.__name__}: {exc}"
    _abort(comm, f"accord: rank {comm.rank} ({_HOST}): uncaught {text} in thread "
                 f"{thread_name!r}; aborting the job so that the other ranks do not wait for "
                 "this one (the traceback is above)")


# The hooks that were in place before ours (kept after uninstall too: a hook installed on top
# of ours may still call ours, which then just passes on).
_prev_hooks = [sys.excepthook, threading.excepthook]


def _sys_hook(exc_type, exc, tb):
    _prev_hooks[0](exc_type, exc, tb)
    _fatal("main", exc_type, exc, threading.current_thread().name)


def _thread_hook(args):
    _prev_hooks[1](args)
    _fatal("thread", args.exc_type, args.exc_value,
           args.thread.name if args.thread is not None else "?")


def _at_exit() -> None:
    st = _state
    if st is None or st.board is None:
        return
    wait = min(_EXIT_WAIT_MAX, settings.stall_warning() or _EXIT_WAIT_MAX)
    try:
        st.board.leave(wait)
    finally:
        st.board.close()


def install(comm) -> None:
    """Report faults of ``comm``'s job (module doc): cross-rank board, exception hooks, exit
    notice. Collective (the MPI board duplicates the communicator). Replaces an earlier install."""
    global _state
    uninstall()
    comm._make_guard()  # also puts it under the inspector
    st = _Installed(comm, _make_board(comm))
    if sys.excepthook is not _sys_hook:
        _prev_hooks[0] = sys.excepthook
        sys.excepthook = _sys_hook
    if threading.excepthook is not _thread_hook:
        _prev_hooks[1] = threading.excepthook
        threading.excepthook = _thread_hook
    atexit.register(_at_exit)
    _state = st


def uninstall() -> None:
    """Undo :func:`install`: previous exception hooks back, board closed. Collective."""
    global _state
    st, _state = _state, None
    if st is None:
        return
    if sys.excepthook is _sys_hook:
        sys.excepthook = _prev_hooks[0]
    if threading.excepthook is _thread_hook:
        threading.excepthook = _prev_hooks[1]
    atexit.unregister(_at_exit)
    if st.board is not None:
        st.board.close()


def installed() -> bool:
    """Whether :func:`install` is in force."""
    return _state is not None
