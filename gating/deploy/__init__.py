"""The deployment gate: whether a deployment of a commit to a GitHub environment may proceed."""
