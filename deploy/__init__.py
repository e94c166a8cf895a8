"""Deployment role: the sample museum, simulated visitors, demo and provisioning tools.

Imports `protocol` only, never another role.
"""
