"""How the sidecar authenticates to providers: signing and credential sources (no I/O but their refresh)."""
