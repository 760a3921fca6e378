"""The package's own exceptions for a configuration, or a saved evaluation, that cannot be used.

Kept in a module of its own, below everything else, so that models, inference
algorithms and data loaders can refuse a setting without importing the config.
"""


class ConfigError(ValueError):
    """A configuration that cannot be run; the message says which entry and why."""


class EvaluationError(ValueError):
    """A saved evaluation that cannot be resumed (made under other settings, or its
    settings.json damaged); the message names the folder and what to do."""
