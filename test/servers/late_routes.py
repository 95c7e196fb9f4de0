"""Listens at once but /health answers 404 for the first $LATE_REQUESTS requests
(routes registered late); LATE_REQUESTS=-1 means forever."""
import os

from _serve import ok, serve

late = int(os.environ.get("LATE_REQUESTS", "5"))
seen = []


def health():
    seen.append(1)
    if late < 0 or len(seen) <= late:
        return 404, {"error": "route not registered yet"}
    return ok()


serve({"/health": health, "/hits": lambda: (200, {"message": str(len(seen))})})
