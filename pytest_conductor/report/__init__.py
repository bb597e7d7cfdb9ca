"""Session end of a track run: live bus events, metadata.json, the verdict, files changed,
the terminal summary, JUnit names and properties, the graph file."""
