"""Daemonizes the classic way: fork, setsid, fork again; the parent exits 0
once the daemon listens on $PORT (as a forking server tells an init system).

The daemon writes its pid to $DAEMON_PID_FILE before the parent exits, so a
supervisor sees its child exit with code 0 while the daemon holds the port.
"""
import os

from _serve import listen, ok

ready_r, ready_w = os.pipe()
if os.fork():
    os.close(ready_w)
    os.read(ready_r, 1)  # the daemon listens now
    os._exit(0)          # the process the supervisor started: "done"
os.close(ready_r)
os.setsid()
if os.fork():
    os._exit(0)
# The daemon: no controlling terminal, re-parented (to init, or to a subreaper).
server = listen({"/health": ok})
pid_file = os.environ["DAEMON_PID_FILE"]
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(pid_file + ".tmp", pid_file)
os.write(ready_w, b"x")
server.serve_forever()
