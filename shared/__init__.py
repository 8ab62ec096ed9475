"""Pure helpers the sidecar and the controller must apply alike (neither imports the other for them)."""
