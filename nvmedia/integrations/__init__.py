"""Adapters for other clients: ``openai`` (rewrite chat messages that reference local files)."""
