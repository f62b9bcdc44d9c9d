"""The audio node: user audio in (WAV, microphone, browser), agent audio out (speaker or virtual),
and the session recording.

Modules: ``wavio`` (reading any WAV as mono int16 at the session rate; the crash-safe stereo
``session.wav`` writer), ``core`` (``AudioCore``: input pacing, the output timeline, barge-in
cuts, ``audio.played``, all on virtual time), ``resume`` (what a restarted node takes over: the
state file and the last frames in the event log), ``devices`` (sounddevice microphone and
speaker, device choice and loss), ``node`` (the shell: ``python -m rtchat.nodes.audio``).
"""
