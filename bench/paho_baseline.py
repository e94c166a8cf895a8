"""The reference every bus figure is divided by: plain paho-mqtt, QoS 1, publisher → Mosquitto → subscriber.

This is the one module outside bus/mqtt.py that imports paho, on purpose: the baseline must be paho as an
application would use it (its own network threads, `loop_start`/`loop_forever`), not our facade, or a slow
facade would flatter every ratio.

    python -m bench.paho_baseline subscribe HOST PORT USER PASSWORD FILTER COUNT
prints READY once subscribed, then the wall-clock time at which the COUNT-th message arrived.
"""

from __future__ import annotations

import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MAX_INFLIGHT = 100  # the same window our MqttLink uses, so neither side is favoured


def subscribe(host: str, port: int, username: str, password: str, topic_filter: str, count: int) -> None:
    received = 0
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, clean_session=True)
    client.username_pw_set(username, password)

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe(topic_filter, qos=1)

    def on_subscribe(*_: object) -> None:
        print("READY", flush=True)

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received == count:
            print(f"{time.time():.6f}", flush=True)
            done.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(host, port)
    client.loop_start()
    done.wait(300)
    client.loop_stop()
    client.disconnect()


def publish(host: str, port: int, username: str, password: str, topic: str, payload: bytes, count: int) -> float:
    """Publish `count` QoS 1 messages as fast as paho takes them; returns the wall-clock start time."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, clean_session=True)
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.connect(host, port)
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.01)
    started = time.time()
    infos = [client.publish(topic, payload, qos=1) for _ in range(count)]
    infos[-1].wait_for_publish(300)
    client.loop_stop()
    client.disconnect()
    return started


if __name__ == "__main__":
    if len(sys.argv) != 8 or sys.argv[1] != "subscribe":
        raise SystemExit(__doc__)
    subscribe(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]))
