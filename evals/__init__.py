"""Evaluations (``rtchat eval``) and benchmarks (``rtchat bench``)."""
