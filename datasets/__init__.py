"""rtchat.datasets — see DESIGN.md §2 (filled in by later issues)."""
