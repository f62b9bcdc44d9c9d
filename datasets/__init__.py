"""Training data: the transcript-line format (``lines``), TalkBank CHAT, a synthetic spoken corpus."""
