"""A tiny greeter, built by the quickstart track's tasks."""

from greet.core import greet
from greet.fmt import shout

__all__ = ["greet", "shout"]
