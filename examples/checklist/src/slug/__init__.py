"""Turn a title into a URL slug."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["slugify"]


def slugify(title: str, *, max_length: int = 60) -> str:
    """``"Hello, World!"`` -> ``"hello-world"``: ASCII letters and digits, joined by '-'."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = "-".join(words)
    return slug[:max_length].rstrip("-")
