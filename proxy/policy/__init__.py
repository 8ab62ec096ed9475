"""Workload policy in the sidecar: classifying requests, spotting personal data, the audit trail."""
