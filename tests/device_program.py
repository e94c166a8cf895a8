"""A device process for fault tests: emits COUNT artwork views as fast as it can, printing each event_id once
`emit()` has returned (so every printed id is one the device accepted), then waits until the hub has
acknowledged everything and prints DRAINED.

    python tests/device_program.py CONFIG COUNT
"""

from __future__ import annotations

import sys
from pathlib import Path

from bus.config import ClientConfig
from bus.device import DeliveryTuning, DeviceClient
from protocol.events import ArtworkViewed


def main() -> None:
    config = ClientConfig.load(Path(sys.argv[1]))
    count = int(sys.argv[2])
    client = DeviceClient(config, tuning=DeliveryTuning(ack_timeout_s=3.0))
    client.start()
    out = sys.stdout
    for i in range(count):
        event = client.record(ArtworkViewed, artwork_id=f"work-{i % 20}", source="kiosk", language="en")
        out.write(event.event_id + "\n")
        out.flush()
    if client.wait_drained(120):
        out.write("DRAINED\n")
        out.flush()
    client.stop()


if __name__ == "__main__":
    main()
