"""The leaf every layer may use: the typed-dataclass converter and the few constants and helpers
shared across packages. It imports nothing from rtchat."""
