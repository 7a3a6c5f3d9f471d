"""What rank 0 prints and writes: live progress, the table, one sentence per method, the PNG
and the JSON."""
from __future__ import annotations

import json
import os
import sys

from .train import METHODS

_MPIRUN_NAMES = ("mpirun", "mpiexec", "orterun", "prterun", "prte", "srun")


def live_terminal() -> bool:
    """True when progress may be redrawn in place with '\\r'.

    Open MPI gives every rank a pseudo-terminal even when mpirun's own output goes to a file or
    a pipe, so the rank's isatty() says nothing: look up the launcher among this process's
    ancestors (Linux /proc) and ask whether *its* stdout is a terminal. Unknown: plain lines.
    """
    if not sys.stdout.isatty():
        return False
    pid = os.getppid()
    for _ in range(10):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if name in _MPIRUN_NAMES:
            try:
                out = os.readlink(f"/proc/{pid}/fd/1")
            except OSError:
                return False
            return out.startswith(("/dev/pts/", "/dev/tty"))
        if parent <= 1:
            return True  # not started by a launcher: our own terminal is the user's
        pid = parent
    return False


def label(key: str, N: int) -> str:
    return METHODS[key][0].format(N=N)


def fmt_bytes(b: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


class Progress:
    """One line per method: redrawn in place on a terminal, printed once when it finishes
    otherwise (logs stay short)."""

    def __init__(self, N: int, steps: int, live: bool):
        self.N, self.steps, self.live = N, steps, live

    def line(self, key, step, acc, sent, tail):
        return (f"  {label(key, self.N):<15} step {step:>4}/{self.steps}  test acc "
                f"{100 * acc:5.1f}%  {tail}  sent {fmt_bytes(sent)}/rank")

    def __call__(self, key, step, acc, loss, sent):
        if self.live:
            text = self.line(key, step, acc, sent, f"batch loss {loss:7.4f}")
            print("\r" + text, end="", flush=True)

    def done(self, key, r):
        text = self.line(key, r["steps"], r["test_acc"], r["bytes_per_rank"],
                         f"train loss {r['train_loss']:7.4f}") + f"  ({r['wall_s']:.1f} s)"
        if r["diverged_at"] is not None:
            text += f"  diverged (non-finite weights) at step {r['diverged_at']}"
        print(("\r" if self.live else "") + text, flush=True)


def steps_to(r, target):
    return next((s for s, a, _ in r["curve"] if a >= target), None)


def print_table(rows, N, target):
    head = (f"{'method':<15} {'lr':>6} {'test acc':>8} {'train loss':>10} "
            f"{'steps to ' + format(100 * target, '.0f') + '%':>12} {'steps':>5} "
            f"{'sent/rank':>10} {'ms/step median [IQR]':>21}")
    print(head)
    print("-" * len(head))
    for r in rows:
        hit = steps_to(r, target)
        t = (f"{r['step_ms_median']:.1f} [{r['step_ms_p25']:.1f}-{r['step_ms_p75']:.1f}]")
        print(f"{label(r['method'], N):<15} {r['lr']:>6.3g} {100 * r['test_acc']:>7.1f}% "
              f"{r['train_loss']:>10.4f} {('-' if hit is None else str(hit)):>12} "
              f"{r['steps']:>5} {fmt_bytes(r['bytes_per_rank']):>10} {t:>21}")


def _pts(a: float) -> str:
    return f"{100 * a:.1f}%"


def _vs(a: float, b: float) -> str:
    """How accuracy a compares with b. One seed, 359 test images: differences under one point
    (3 images) are not told apart."""
    d = 100 * (a - b)
    if abs(d) < 1.0:
        return "about the same as"
    return f"{abs(d):.1f} points {'above' if d > 0 else 'below'}"


def stories(rows, N, target, period):
    """One sentence per method, written from the measured numbers (never a fixed verdict)."""
    by = {r["method"]: r for r in rows}
    base = by.get("average")
    tgt = f"{100 * target:.0f}%"

    def reach(r):
        s = steps_to(r, target)
        return f"reached {tgt} after {s} steps" if s else f"never reached {tgt}"

    def vs_base(r):
        if base is None or r is base:
            return ""
        return f" ({_vs(r['test_acc'], base['test_acc'])} average's {_pts(base['test_acc'])})"

    def share(r):
        if base is None or base["bytes_per_rank"] == 0:
            return fmt_bytes(r["bytes_per_rank"]) + " per rank"
        return f"{r['bytes_per_rank'] / base['bytes_per_rank']:.0%} of average's bytes"

    out = {}
    for r in rows:
        k, acc = r["method"], r["test_acc"]
        if r["diverged_at"] is not None:
            out[k] = (f"lr {r['lr']:g} diverged (non-finite weights) at step "
                      f"{r['diverged_at']}.")
            continue
        if k == "average":
            out[k] = (f"the baseline: one mean gradient of {N} ranks' batches per step at the "
                      f"single-rank lr; {reach(r)}, {_pts(acc)} at the end.")
        elif k == "average-xN":
            out[k] = (f"linear lr scaling (lr x {N} = {r['lr']:g}) {reach(r)} and ended at "
                      f"{_pts(acc)}{vs_base(r)}"
                      + ("; training broke down at this lr." if acc < 0.5 else "."))
        elif k == "adasum":
            scaled = by.get("average-xN")
            extra = (f" and {_vs(acc, scaled['test_acc'])} average lr*{N}'s "
                     f"{_pts(scaled['test_acc'])}" if scaled is not None else "")
            out[k] = (f"at the single-rank lr Adasum {reach(r)} and ended at {_pts(acc)}"
                      f"{vs_base(r)}{extra}, sending {share(r)}.")
        elif k == "acga":
            out[k] = (f"consensus weights (keep_scale, single-rank lr) {reach(r)}, ended at "
                      f"{_pts(acc)}{vs_base(r)}, sending {share(r)}.")
        elif k == "lsgd":
            out[k] = (f"pulled toward the best worker in {r['syncs']} rounds "
                      f"({r['global_syncs']} global); {reach(r)}, ended at {_pts(acc)}"
                      f"{vs_base(r)} with {share(r)}.")
        elif k == "cpsgd":
            out[k] = (f"averaging every {period} steps ({r['syncs']} syncs) {reach(r)}, ended at "
                      f"{_pts(acc)}{vs_base(r)} with {share(r)}.")
        elif k == "adpsgd":
            c = by.get("cpsgd")
            extra = (f"; cpsgd: {c['syncs']} syncs, {_pts(c['test_acc'])}" if c else "")
            out[k] = (f"{r['syncs']} syncs (budget {r['steps'] // period}) {reach(r)}, ended at "
                      f"{_pts(acc)}{vs_base(r)}{extra}.")
    return out


def plot(rows, N, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        steps = [c[0] for c in r["curve"]]
        acc = [100 * c[1] for c in r["curve"]]
        sent = [c[2] / 1e6 for c in r["curve"]]
        ax1.plot(steps, acc, label=label(r["method"], N))
        # log axis: drop the 0-byte starting point
        ax2.plot(sent[1:], acc[1:], label=label(r["method"], N))
    ax1.set(xlabel="step", ylabel="test accuracy (%)", ylim=(0, 100))
    ax2.set(xlabel="MB sent per rank (log scale)", ylabel="test accuracy (%)", ylim=(0, 100),
            xscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path
