"""The device runtime every role's process uses to speak the contract over the site's broker: the MQTT facade
(the only paho import), the durable SQLite outbox, the durable device client, zeroconf discovery (the only
zeroconf import), reconnect backoff, client configuration files and background WAL checkpoints.

It imports `protocol` (the contract) and no role. The contract alone, without paho or zeroconf, is `protocol`.
"""
