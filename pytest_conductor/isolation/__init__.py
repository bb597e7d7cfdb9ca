"""Isolation of dispatched agents: git worktrees per node, the track branch, the scope check."""
