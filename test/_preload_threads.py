"""A preload that starts a thread at import (as some client libraries do)."""
import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="started-at-import", daemon=True).start()
