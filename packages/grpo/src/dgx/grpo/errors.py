"""Exception types for errors a user of the trainer and CLI can cause."""


class ConfigError(ValueError):
    """A config problem; the message names the file, key path, bad value and valid names."""
