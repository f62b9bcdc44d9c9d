"""rtchat.evals — see DESIGN.md §2 (filled in by later issues)."""
