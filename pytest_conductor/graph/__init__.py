"""Graph algorithms over a plan's dependencies (order, levels, critical path, width) and
the one rule for "blocked, and why". Plain ids in, plain ids out; no pytest.

Kept empty on purpose: ``graph.blocking`` is imported by every pytest run (state).
"""
