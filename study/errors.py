"""Errors raised at the study boundary."""


class SpecError(ValueError):
    """An invalid study spec: the message names the file and the field (e.g.
    `search.space.pretrain.mask_ratio`)."""
