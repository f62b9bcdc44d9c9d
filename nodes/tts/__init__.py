"""The TTS node's pieces: speech synthesis backends (espeak-ng so far)."""
