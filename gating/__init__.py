"""gating: git-native gates for LLM systems on GitHub."""

__version__ = "1.0.0"
