"""Adapters for other clients.

* ``openai``: ``rewrite_messages`` / ``arewrite_messages`` make an OpenAI-format conversation
  ready to send (any client that sends such messages: the openai SDK, httpx, your own).
* ``langchain``: ``with_media(ChatNVIDIA(...))``, a Runnable that does the same on every call
  (needs ``pip install 'nvmedia[langchain]'``).
"""
