"""The local provider: real processes and real stores on this machine (the embedded default)."""
