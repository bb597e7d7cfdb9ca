"""User properties of a node's reports (they travel through xdist and into --junitxml)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["set_properties"]


def set_properties(target: list[tuple[str, object]], props: Sequence[tuple[str, str]]) -> None:
    """Set each property in place (replacing an earlier value of the same key) or append."""
    where = {key: i for i, (key, _) in enumerate(target)}
    for key, value in props:
        if key in where:
            target[where[key]] = (key, value)
        else:
            where[key] = len(target)
            target.append((key, value))
