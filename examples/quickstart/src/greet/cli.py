import sys

from greet.core import greet
from greet.fmt import shout


def main(argv: list[str]) -> int:
    loud = "--loud" in argv
    names = [a for a in argv if not a.startswith("--")] or ["World"]
    for name in names:
        text = greet(name)
        print(shout(text) if loud else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
