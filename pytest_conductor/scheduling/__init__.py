"""Running nodes in dependency order: the ready queue (pure), the xdist scheduler, the
worker-side run-on-arrival patch, the xdist hooks and the reports of nodes never run."""
