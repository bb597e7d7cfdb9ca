"""Small pure helpers every concern shares: whole-file writes, UTC timestamps, process
groups and the nested-run flag. Nothing here imports pytest or another subpackage."""
