"""Fine-tuning any causal LM on transcript lines (``rtchat train``) and the embedded agent's adapter."""
