"""Exception types for errors a user of the trainer and CLI can cause."""


class ConfigError(ValueError):
    """A config problem; the message names the file, key path, bad value and valid names."""


class TrainingError(RuntimeError):
    """A run cannot go on (e.g. the reward returned NaN); the message says where and what to check."""


class HubError(RuntimeError):
    """The Hugging Face Hub refused or could not be reached; the message says which and what to do."""
