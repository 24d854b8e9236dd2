"""Say which rank of a failed msrun job died first, and where its log is.

msrun names the first failed worker by process id only ("Worker process 2596 exit with exception. Error
code: -9.") and then stops the others; train.py logs each rank's process id when it joins the group.

    python scripts/msrun_failure.py LOG_DIR        (LOG_DIR holds msrun.log and worker_<rank>.log)
"""
import glob
import os
import re
import signal
import sys

WORKER_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
RANK_PROCESS = re.compile(r"^\[rank (\d+)\] process (\d+) on ", re.M)


def describe_code(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def read(path):
    with open(path, errors="replace") as handle:
        return handle.read()


def failure_report(log_dir):
    ranks = {}  # pid -> (rank, log)
    for log in sorted(glob.glob(os.path.join(log_dir, "worker_*.log"))):
        for rank, pid in RANK_PROCESS.findall(read(log)):
            ranks[int(pid)] = (int(rank), log)
    msrun_log = os.path.join(log_dir, "msrun.log")
    failed = WORKER_FAILED.search(read(msrun_log)) if os.path.exists(msrun_log) else None
    if failed is None:
        return f"error: the distributed job failed; see the logs in {log_dir}"
    pid, code = int(failed.group(1)), int(failed.group(2))
    if pid in ranks:
        rank, log = ranks[pid]
        return (f"error: rank {rank} (process {pid}) {describe_code(code)}, and msrun stopped the other ranks; "
                f"see {log}")
    return (f"error: worker process {pid} {describe_code(code)} before joining the group, and msrun stopped the "
            f"others; see the worker logs in {log_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} LOG_DIR")
    print(failure_report(sys.argv[1]))
