"""The data store; the track expects a `save` function that was never written."""


def load(key: str) -> str:
    return key
