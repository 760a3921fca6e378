"""The package's own exception for a configuration that cannot be run.

Kept in a module of its own, below everything else, so that models, inference
algorithms and data loaders can refuse a setting without importing the config.
"""


class ConfigError(ValueError):
    """A configuration that cannot be run; the message says which entry and why."""
