import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

from greet import greet, shout


def test_greet() -> None:
    assert greet("Ada") == "Hello, Ada!"


def test_shout() -> None:
    assert shout("hi") == "HI"
