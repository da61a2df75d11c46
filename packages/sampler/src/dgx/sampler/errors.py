"""Exception type for errors a user of the sampler can cause."""


class SamplerError(ValueError):
    """A bad sampler input (schedule, step count, model path); the message says what to do."""
