"""The track as pytest sees it: loading the plan into the run's state, the collector and
one item per node, collection order, in-process blocking and history."""
