"""Errors raised at the trainers boundary."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names the file and the missing/unexpected keys."""
