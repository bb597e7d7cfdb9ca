#!/usr/bin/env bash
# Run every Conductor track (or, with BASE set to a git revision, every track changed
# since BASE) and exit non-zero if any track did not pass. For any CI runner:
#   BASE=origin/main bash run-tracks.sh
# Leaves reports/<track>.xml (JUnit) and reports/<track>.md (Markdown summary); keep
# them, and conductor/tracks/*/metadata.json and conductor/tracks/*/.message-bus/, as
# the job's artifacts.
set -u

if [ -n "${BASE:-}" ]; then
  tracks=$(conductor-bus tracks --ids --changed-since "$BASE") || exit 2
else
  tracks=$(conductor-bus tracks --ids) || exit 2
fi

status=0
for track in $tracks; do
  python -m pytest --conductor-track="$track" \
    --junitxml="reports/$track.xml" --conductor-summary-md="reports/$track.md" \
    || status=1
done
exit "$status"
