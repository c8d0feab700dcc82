"""gdn2.fast: the Triton backend (placeholder until its kernels land)."""


def unavailable_reason() -> str | None:
    return "the Triton kernels are not implemented yet"
