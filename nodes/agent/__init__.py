"""The agent node: a causal LM that reads the conversation as one timed transcript and decides,
cycle by cycle, whether to stay silent, speak, pause or yield.

Modules: ``transcript`` (the sequence format and its rewriting rules), ``core`` (the pure,
virtual-time decision cycle), ``lm`` (model loading and the cached decoding loop),
``decoding`` (greedy, nucleus, typical, contrastive, dynamic contrastive), ``protocol`` (what
the core needs from a model), ``node`` (the bus shell: ``python -m rtchat.nodes.agent``).
"""
