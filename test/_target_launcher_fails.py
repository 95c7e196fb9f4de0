"""A target whose module imports in the test runner but fails in harness's launcher."""
import sys

if "_harness_zygote" in sys.modules:
    raise ImportError("target-marker: this module refuses harness's launcher")


def serve() -> None:
    """Never runs: its module cannot be imported where the server would be forked."""
