"""The one-machine demo: the sample museum, simulated visitors and devices, and `museum demo`, which runs the
whole site (broker, hub, kiosks, gateways) as real processes.

An orchestrator: it may use every role's public API, and no role imports it.
"""
