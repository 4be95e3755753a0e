"""Running the ``kvmcore`` command in-process for the fuzzing harness, and what every run must
satisfy: an exit status of 0, 1 or 2 and no traceback, whatever the input."""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass

from kvmcore.cli.main import main

#: Seconds one in-process command may take (generous: the machine may be busy; a hang or an
#: input-proportional blow-up takes far longer).
TIME_LIMIT = 20.0


#: Commands run in this process, written every 25 to ``$KVMCORE_FUZZ_COUNT`` (a campaign's
#: example count survives its time limit's SIGINT).
COUNT = 0


@dataclass
class Run:
    argv: list[str]
    status: int
    out: str
    err: str
    seconds: float


def run_cli(argv: list[str]) -> Run:
    """``kvmcore ARGV`` in this process: its exit status, stdout and stderr.

    An exception escaping ``main`` is a failure of the harness's first property (never a
    traceback), so it is not caught here: hypothesis reports it with the input.
    """
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: usage errors (2), --help/--version (0)
            status = exc.code if isinstance(exc.code, int) else 2
    seconds = time.perf_counter() - start
    if status == 130:  # main() caught a KeyboardInterrupt: a campaign's time limit, not a finding
        raise KeyboardInterrupt
    global COUNT
    COUNT += 1
    count_file = os.environ.get("KVMCORE_FUZZ_COUNT")
    if count_file and COUNT % 25 == 0:
        with open(count_file, "w") as f:
            f.write(f"{COUNT}\n")
    run = Run(list(argv), status, out.getvalue(), err.getvalue(), seconds)
    check_common(run)
    return run


def check_common(run: Run) -> None:
    assert run.status in (0, 1, 2), f"exit status {run.status} for {run.argv}"
    for stream in (run.out, run.err):
        assert "Traceback (most recent call last)" not in stream, f"traceback for {run.argv}:\n{stream}"
    assert run.seconds < TIME_LIMIT, f"{run.argv} took {run.seconds:.1f} s"
    if run.status == 1:
        assert run.err.strip(), f"exit status 1 without a message on stderr for {run.argv}"
