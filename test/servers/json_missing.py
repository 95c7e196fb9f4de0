"""/health answers 200 with JSON lacking 'message' for the first $BAD_REQUESTS
requests (-1: forever), then the right JSON."""
import os

from _serve import ok, serve

bad = int(os.environ.get("BAD_REQUESTS", "-1"))
seen = []


def health():
    seen.append(1)
    if bad < 0 or len(seen) <= bad:
        return 200, {"status": "starting"}
    return ok()


serve({"/health": health})
