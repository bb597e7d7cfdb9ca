"""Dispatch mode: one agent process per node — its command, prompt, liveness and retries —
and the pytest glue that cleans up after agents."""
