"""Noticing a dead path to the broker without the broker's help.

A path can die silently: a switch port or a Wi-Fi link that drops everything, a NAT or firewall that forgot the
connection. No RST comes back, the socket stays open and quiet, and TCP retransmits for many minutes before it
gives up. Only the broker's keepalive would then close the connection, and nothing of that close reaches us.

Two requests of ours get an immediate reply from a live broker, so their silence is the sign:

- a QoS 1 PUBLISH gets its PUBACK: while one is outstanding, no PUBACK for `reply_timeout_s` means the path is
  dead. The clock starts at the oldest outstanding publish and starts again at every PUBACK and whenever the
  broker's TCP acknowledges more of our bytes (`sending_progressed`), so that neither a queue draining at the
  broker's pace nor a large batch crawling over a slow link is taken for a dead path;
- a PINGREQ gets its PINGRESP: paho sends one once nothing has been received for `keepalive_s`; if nothing at
  all arrives for `reply_timeout_s` more, the path is dead.

paho (2.2) notices the second on its own too, but later: it pings every `keepalive_s` counted from its previous
ping (whatever else was sent meanwhile) as well as after `keepalive_s` of silence, and gives up a whole
`keepalive_s` after an unanswered ping, up to two keepalives after the path died. Whichever notices first closes
the connection; with `reply_timeout_s` below `keepalive_s` the worst case is `keepalive_s + reply_timeout_s`.
Times are plain numbers (time.monotonic()), so the decision can be tested without a clock or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBACK_TIMEOUT = "dead path: no PUBACK"
PING_TIMEOUT = "dead path: no PINGRESP"


@dataclass
class Liveness:
    keepalive_s: float
    reply_timeout_s: float
    last_received: float = 0.0
    ping_sent_at: float | None = None
    awaiting_puback_since: float | None = None

    def connected(self, now: float) -> None:
        self.last_received = now
        self.ping_sent_at = None
        self.awaiting_puback_since = None

    def received(self, now: float) -> None:
        """Bytes arrived from the broker: whatever they are, a ping is answered by them."""
        self.last_received = now
        self.ping_sent_at = None

    def published(self, now: float) -> None:
        """A QoS 1 publish was handed to the connection."""
        if self.awaiting_puback_since is None:
            self.awaiting_puback_since = now

    def pubacked(self, now: float, *, still_outstanding: bool) -> None:
        self.awaiting_puback_since = now if still_outstanding else None

    def sending_progressed(self, now: float) -> None:
        """The peer's TCP acknowledged more of our bytes: what awaits a PUBACK may simply not have arrived yet."""
        if self.awaiting_puback_since is not None:
            self.awaiting_puback_since = now

    def keepalive_checked(self, now: float) -> None:
        """Called right after paho's own keepalive check (loop_misc). Once nothing has been received for
        `keepalive_s`, that check has sent a PINGREQ, or one it sent earlier is still unanswered: either way a
        ping is outstanding from now on at the latest. Marking it here, rather than trusting the silence alone,
        keeps an owner that did not poll for a while (a hub in a long commit) from being judged by a silence
        in which no ping was ever sent."""
        if self.ping_sent_at is None and now - self.last_received >= self.keepalive_s:
            self.ping_sent_at = now

    def verdict(self, now: float) -> str | None:
        """Why the path is dead, or None while it may be alive."""
        if self.awaiting_puback_since is not None and now - self.awaiting_puback_since > self.reply_timeout_s:
            return f"{PUBACK_TIMEOUT} for {now - self.awaiting_puback_since:.1f} s"
        if self.ping_sent_at is not None and now - self.ping_sent_at > self.reply_timeout_s:
            return (f"{PING_TIMEOUT} {now - self.ping_sent_at:.1f} s after a keepalive ping "
                    f"(nothing received for {now - self.last_received:.1f} s)")
        return None
