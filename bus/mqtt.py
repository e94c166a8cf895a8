"""The MQTT facade: the only module that imports paho-mqtt.

One `MqttLink` is owned by one thread, which calls `poll()` in a loop; paho's callbacks run inside `poll()` and
only record what happened, the owner does the work with what `poll()` returns. There is no paho network thread:
the owner's loop selects on the socket and on a wake pipe, so another thread can make a blocked `poll()` return
(`wake()`) the moment it has something to send.

Every connection attempt uses a fresh paho client. paho would otherwise re-send its own in-memory queue after a
reconnect, on top of what our durable outbox re-sends; starting clean leaves the outbox as the one source of
truth for what still has to go.

Two failures are told apart from a plain lost connection:

- A **dead path** (`reply_timeout_s` set): no PUBACK or no PINGRESP in time (`bus.liveness`), though the socket
  is still open. The connection is torn down and retried like any lost one; the reason starts with "dead path".
- A **refusal**: the broker answered CONNECT with a failure that only an operator can mend (bad user name or
  password, not authorised, client identifier rejected). It is counted (`refusals`, `last_refusal`), reported once
  per change of reason through `on_refused`, and retried on a slower backoff of its own (`refusal_backoff`), so
  that a misconfigured device neither floods the broker's log nor goes quiet.

TLS trusts exactly the site CA (`Endpoint.ca_file`), which signs only the site's broker certificate; the host
name is not checked because devices often reach the broker by an address found with zeroconf.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bus.backoff import Backoff
from bus.liveness import Liveness

log = logging.getLogger(__name__)

MAX_PACKETS_PER_POLL = 5000

# CONNACK failures that name an operator's mistake; "server unavailable" and "server busy" pass by themselves.
_OPERATOR_REFUSALS = frozenset({"Unsupported protocol version", "Client identifier not valid",
                                "Bad user name or password", "Not authorized"})


def _bytes_acked_by_peer(sock: Any) -> int | None:
    """How many bytes of ours the peer's TCP has acknowledged (Linux's tcpi_bytes_acked); None where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
    except (AttributeError, OSError):
        return None
    return struct.unpack_from("Q", info, 120)[0] if len(info) >= 128 else None


def default_refusal_backoff() -> Backoff:
    """A refused device retries after 60–120 s, then 120–240 s, then every 150–300 s: soon enough once the
    operator has mended the password, rarely enough not to fill the broker's log meanwhile."""
    return Backoff(base_s=120.0, cap_s=300.0)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca_file: Path | None = None  # TLS iff set

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=…)"


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """A connection to the broker that keeps itself up. Not thread-safe, except `wake()`."""

    def __init__(self, client_id: str, endpoint: Endpoint, credentials: Credentials | None, *,
                 clean_session: bool = True, will: Will | None = None,
                 subscriptions: Sequence[tuple[str, int]] = (), keepalive: int = 30,
                 on_connected: Callable[[], None] | None = None,
                 on_disconnected: Callable[[str], None] | None = None, backoff: Backoff | None = None,
                 max_inflight: int = 100, reply_timeout_s: float | None = None,
                 refusal_backoff: Backoff | None = None,
                 on_refused: Callable[[str, float], None] | None = None,
                 max_bytes_per_poll: int | None = None) -> None:
        self.client_id = client_id
        # Bounds what one poll() reads in payload bytes, as MAX_PACKETS_PER_POLL does in messages: the rest waits
        # in the socket and the broker, not in the owner's memory (the hub's rounds).
        self._max_bytes_per_poll = max_bytes_per_poll
        self._received_bytes = 0
        self.endpoint = endpoint
        self._credentials = credentials
        self._clean_session = clean_session
        self._will = will
        self._subscriptions = list(subscriptions)
        self._keepalive = keepalive
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.backoff = backoff or Backoff()
        self.refusal_backoff = refusal_backoff or default_refusal_backoff()
        self._on_refused = on_refused
        self._max_inflight = max_inflight
        # Off unless the owner polls often (a device's worker): see `Liveness.keepalive_checked`.
        self._liveness = None if reply_timeout_s is None else Liveness(keepalive, reply_timeout_s)
        self._bytes_acked: int | None = None  # by the broker's TCP, while a PUBACK is awaited
        self._client: paho.Client | None = None
        self._connected = False
        self._lost: str | None = None
        self._next_attempt = 0.0
        self._inbox: list[Received] = []
        self._unacked: set[int] = set()
        self.last_refusal: str | None = None
        self.refusals = 0
        self._refused = False
        self.last_error: str | None = None
        self.last_disconnect: str | None = None
        self.connections = 0
        self.subscribed = False
        """Whether the broker has confirmed (SUBACK) this connection's subscriptions: messages others publish
        from then on reach this client. A persistent session keeps them across reconnections."""
        self._subscribe_mid: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closed = False

    # --- state -------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def set_endpoint(self, endpoint: Endpoint) -> None:
        """Use another broker address from the next connection attempt on (after a new discovery)."""
        self.endpoint = endpoint

    # --- paho callbacks: record only ---------------------------------------------------------------------

    def _cb_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self.last_refusal = str(reason)
            self._refused = str(reason) in _OPERATOR_REFUSALS
            self.refusals += self._refused
            self._lost = f"refused: {reason}"
            return
        self.last_refusal = None
        self._connected = True
        self.connections += 1
        self.backoff.reset()
        self.refusal_backoff.reset()
        if self._liveness is not None:
            self._liveness.connected(time.monotonic())
        if self._subscriptions:
            self._subscribe_mid = client.subscribe(self._subscriptions)[1]
        if self._on_connected is not None:
            self._on_connected()

    def _cb_subscribe(self, client: paho.Client, _userdata: Any, mid: int, _reasons: Any, _props: Any) -> None:
        if client is self._client and mid == self._subscribe_mid:
            self.subscribed = True

    def _cb_disconnect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if client is self._client and self._lost is None:
            self._lost = str(reason)

    def _cb_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        # bytes() of a bytes object is that object: no copy; paho types the payload as bytes | bytearray.
        self._inbox.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
        self._received_bytes += len(message.payload)

    def _cb_publish(self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        if mid in self._unacked:  # QoS 0 publishes are "published" once written: only a PUBACK counts here
            self._unacked.discard(mid)
            if self._liveness is not None:
                self._liveness.pubacked(time.monotonic(), still_outstanding=bool(self._unacked))

    # --- connection management ---------------------------------------------------------------------------

    def _start_connect(self) -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=self._clean_session, protocol=paho.MQTTv311)
        client.max_inflight_messages_set(self._max_inflight)
        client.connect_timeout = 5.0
        if self._credentials is not None:
            client.username_pw_set(self._credentials.username, self._credentials.password)
        if self._will is not None:
            client.will_set(self._will.topic, self._will.payload, self._will.qos, self._will.retain)
        if self.endpoint.ca_file is not None:
            client.tls_set(ca_certs=str(self.endpoint.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            client.tls_insecure_set(True)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_message = self._cb_message
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        self._client = client
        self.subscribed = False
        self._lost = None
        self._unacked.clear()
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=self._keepalive)
        except (OSError, ssl.SSLError, ValueError) as error:
            self._client = None
            self._fail(f"cannot reach {self.endpoint}: {error}")
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket is one too
            # paho leaves Nagle on: a lone event or ack would wait for the peer's delayed ACK (tens of ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _fail(self, reason: str, *, refused: bool = False) -> float:
        self.last_error = reason
        delay = (self.refusal_backoff if refused else self.backoff).next_delay()
        self._next_attempt = time.monotonic() + delay
        log.info("%s: %s; next attempt in %.1f s", self.client_id, reason, delay)
        return delay

    def _teardown(self) -> None:
        client, self._client = self._client, None
        was_connected, self._connected = self._connected, False
        reason = self._lost or "closed"
        refused, self._refused = self._refused, False
        self._lost = None
        if client is not None:
            client.on_disconnect = None
            with contextlib.suppress(Exception):  # the socket may be gone already: nothing to tell the broker
                client.disconnect()
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._unacked.clear()
        if refused:
            delay = self._fail(reason, refused=True)
            if self._on_refused is not None:
                self._on_refused(reason.removeprefix("refused: "), delay)
            return
        self._fail(f"connection lost ({reason})")
        if was_connected:
            self.last_disconnect = reason
            if self._on_disconnected is not None:
                self._on_disconnected(reason)

    # --- the loop ----------------------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[Received]:
        """Connect if it is time to, move bytes, run keepalive; return the messages received meanwhile."""
        if self._closed:
            raise RuntimeError("poll() on a closed MqttLink")
        if self._client is None:
            now = time.monotonic()
            if now >= self._next_attempt:
                self._start_connect()
            if self._client is None:
                self._wait_for_wake(max(0.0, min(timeout, self._next_attempt - time.monotonic())))
                return self._take_inbox()
        client = self._client
        sock = client.socket()
        if sock is None:
            self._lost = self._lost or "socket closed"
            self._teardown()
            return self._take_inbox()
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        try:
            readable, writable, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [],
                                                  0 if pending else timeout)
        except (OSError, ValueError):
            readable, writable = [], []
            self._lost = self._lost or "socket error"
        if self._wake_r in readable:
            self._drain_wake()
        if sock in readable or pending:
            self._read_available(client, sock)
        if self._client is client and self._lost is None and (sock in writable or client.want_write()):
            client.loop_write()
        if self._client is client and self._lost is None:
            client.loop_misc()
            if self._liveness is not None and self._connected and self._lost is None and sock not in readable:
                # Judged only when there was nothing to read: a silent path never makes the socket readable, and
                # replies still waiting in the socket buffer must not count as missing.
                now = time.monotonic()
                self._liveness.keepalive_checked(now)
                self._watch_sending(sock, now)
                self._lost = self._liveness.verdict(now)
                if self._lost is not None:
                    log.warning("%s: %s; reconnecting", self.client_id, self._lost)
        if self._lost is not None:
            self._teardown()
        return self._take_inbox()

    def _watch_sending(self, sock: Any, now: float) -> None:
        assert self._liveness is not None
        if self._liveness.awaiting_puback_since is None:
            self._bytes_acked = None
            return
        acked = _bytes_acked_by_peer(sock)
        if acked is not None and self._bytes_acked is not None and acked > self._bytes_acked:
            self._liveness.sending_progressed(now)
        self._bytes_acked = acked

    def _read_available(self, client: paho.Client, sock: Any) -> None:
        byte_limit = None if self._max_bytes_per_poll is None else self._received_bytes + self._max_bytes_per_poll
        for _ in range(MAX_PACKETS_PER_POLL):
            if byte_limit is not None and self._received_bytes >= byte_limit:
                return
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._lost is not None:
                if self._lost is None:
                    self._lost = paho.error_string(rc)
                return
            if self._liveness is not None:
                self._liveness.received(time.monotonic())
            if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
                continue
            try:
                more, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return
            if not more:
                return

    def _wait_for_wake(self, timeout: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _take_inbox(self) -> list[Received]:
        inbox, self._inbox = self._inbox, []
        return inbox

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # already woken, or closing
            self._wake_w.send(b"\0")

    # --- sending -----------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Hand a message to the broker connection. False when not connected: nothing was queued anywhere."""
        client = self._client
        if client is None or not self._connected:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._lost = self._lost or "connection lost while publishing"
            return False
        if qos > 0:
            self._unacked.add(info.mid)
            if self._liveness is not None:
                self._liveness.published(time.monotonic())
        return True

    # --- helpers for owners that block -------------------------------------------------------------------

    def _poll_keeping(self, timeout: float) -> None:
        # A persistent session delivers its queue right after CONNACK, and paho has already PUBACKed it: what
        # arrives while we wait must stay for the owner's next poll(), or it is lost for good.
        received = self.poll(timeout)
        self._inbox[:0] = received

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._connected and time.monotonic() < deadline:
            self._poll_keeping(0.05)
            if self.last_refusal is not None and not self._connected:
                return False
        return self._connected

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._unacked and time.monotonic() < deadline:
            self._poll_keeping(0.05)
            if not self._connected:
                return False
        return not self._unacked

    def disconnect(self) -> None:
        """A clean disconnect: the broker does not publish the will."""
        client = self._client
        if client is not None and self._connected:
            client.disconnect()
            deadline = time.monotonic() + 1.0
            while client.want_write() and time.monotonic() < deadline:
                client.loop_write()
        self._client = None
        self._connected = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                sock.close()

    def close(self) -> None:
        if self._closed:
            return
        self.disconnect()
        self._closed = True
        self._wake_r.close()
        self._wake_w.close()
