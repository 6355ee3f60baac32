"""Take a cluster down when the process that owns it exits, however it exits.

A test session killed by a timeout (SIGTERM/SIGKILL) never runs its fixture finalizers; without
this watcher its control plane would keep two cores busy forever.

    python -m jupyternetes_ssa.local_cluster.reaper --pid PID --start-time TICKS --state-dir DIR
"""

from __future__ import annotations

import argparse
import os
import select
from pathlib import Path

from .procs import Proc, alive


def wait_for_exit(owner: Proc) -> None:
    """Block until ``owner`` has exited: a pidfd when the kernel has them, else polling."""
    try:
        fd = os.pidfd_open(owner.pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and alive(owner):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(1000) and alive(owner):
            pass
        os.close(fd)
    while alive(owner):
        select.select([], [], [], 1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--start-time", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    wait_for_exit(Proc("owner", args.pid, args.start_time, "", ()))
    from .cluster import down

    down(args.state_dir)


if __name__ == "__main__":
    main()
