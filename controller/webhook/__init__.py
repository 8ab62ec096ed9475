"""Sidecar injection: the pure Pod -> JSONPatch builder (`inject`), the AdmissionReview
server (`server`), the controller's own certificates (`certs` pure, `certstore` I/O)."""
