"""The TTS node: agent text → speech (core, shell, engines: Piper, espeak-ng; Bark and FastSpeech2)."""
