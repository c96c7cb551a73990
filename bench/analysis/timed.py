"""Runs a command, prints its standard error, its wall time and its peak
RSS, and writes its standard output to STDOUT_FILE (default: discarded).
Fails with the command's standard error when it fails.

usage: python3 timed.py [--stdout STDOUT_FILE] COMMAND [ARG...]
"""
import resource
import subprocess
import sys
import time

args = sys.argv[1:]
stdout_file = None
if args[:1] == ["--stdout"]:
    stdout_file, args = args[1], args[2:]
t = time.perf_counter()
out = subprocess.run(args, capture_output=True, text=True)
wall = time.perf_counter() - t
if out.returncode != 0:
    sys.exit(out.stderr)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if stdout_file:
    open(stdout_file, "w").write(out.stdout)
print(out.stderr.strip())
print(f"end to end {wall:.2f} s, peak RSS {rss:.0f} MiB")
