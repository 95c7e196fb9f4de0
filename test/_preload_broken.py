"""A preload whose import fails."""
raise ImportError("preload-marker: this module cannot be imported")
