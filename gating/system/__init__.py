"""The LLM system at one revision: the manifest and its schema, snapshots, revision readers, canonical JSON."""
