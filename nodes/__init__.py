"""The bus nodes; each runs alone as ``python -m rtchat.nodes.<name>``."""
