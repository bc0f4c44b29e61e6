"""The one place that runs git: repositories, revision readers, notes backends, the snapshot store."""
