"""Run one command and report its wall time and its own peak RSS: ``python _child.py OUT -- ARGV...``.

Prints ``{"status": .., "wall_s": .., "cpu_s": .., "maxrss_bytes": ..}`` (``cpu_s``: the
command's user + system CPU time) on standard output; the command's
standard output goes to the file OUT (or nowhere for ``-``), its standard error passes through.

Why a separate small process: Linux's ``ru_maxrss`` of a child counts the memory image it was
forked from until it calls exec (``exec_mmap()`` keeps the old mm's high-water mark), so a child
forked straight from the benchmark process, which holds hundreds of MB by then, would report at
least that much. Forked from this process (about 10 MB, stdlib only), the command's own peak
shows.
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    out, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, __doc__
    with open(os.devnull if out == "-" else out, "wb") as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    print(json.dumps({"status": proc.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "maxrss_bytes": usage.ru_maxrss * 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
