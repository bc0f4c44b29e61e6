"""gating: git-native gates for LLM systems on GitHub."""

__version__ = "0.1.0"
