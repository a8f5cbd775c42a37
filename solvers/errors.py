"""Exceptions raised for bad input; each message names the offending value."""


class InputError(ValueError):
    """A bad argument: unknown name, invalid option, wrong shape, bad grid."""


class NonFiniteError(FloatingPointError):
    """The model or a solver step produced NaN or inf."""


class StepLimitError(InputError):
    """An adaptive solver used up its step budget (``max_num_steps``) before the end time."""
