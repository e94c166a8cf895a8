"""The contract every role speaks: events, topics, codec, the durable MQTT client, discovery.

Every role imports this package; no role imports another role.
"""

SOFTWARE_VERSION = "0.1.0"
