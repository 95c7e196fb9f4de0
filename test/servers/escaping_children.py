"""Spawns two grandchildren, one escaping the process group with setsid,
writes their pids to the log, then serves."""
import subprocess
import sys

from _serve import ok, serve

sleeper = [sys.executable, "-c", "import threading; threading.Event().wait()"]
stay = subprocess.Popen(sleeper)
escape = subprocess.Popen(sleeper, start_new_session=True)
print("grandchildren", stay.pid, escape.pid, flush=True)
serve({"/health": ok})
