"""Starts a helper that leaves everything harness could know it by: it calls
setsid (a new session and process group) and execs with a scrubbed
environment (no HARNESS_* marker), then serves the port.  The parent stays in
the foreground and serves nothing, so the port is the escapee's alone.
"""
import os
import subprocess
import sys
import threading

here = os.path.dirname(os.path.abspath(__file__))
clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": os.environ["HOST"],
             "PORT": os.environ["PORT"], "PYTHONPATH": here}
# The helper says who it is before it serves: once the server answers, the
# line is in the log (printed here after Popen, it could come after readiness).
subprocess.Popen([sys.executable, "-c",
                  "import os; print('escapee', os.getpid(), flush=True)\n"
                  "from _serve import ok, serve; serve({'/health': ok})"],
                 env=clean_env, start_new_session=True)
threading.Event().wait()
