"""Reading a track's plan.md: fenced blocks, the DAG reader and its problems, durations.

Kept empty on purpose: ``plan.durations`` is imported by every pytest run (settings), so
this package must not pull in the YAML reader. Import from the modules themselves.
"""
