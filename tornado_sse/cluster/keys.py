"""The names of every Redis key and pub/sub channel of the cluster, in one place.

With one Redis (or Sentinel) the names are ``<prefix><kind>:<name>``. In a Redis Cluster every
name carries a hash tag, ``<prefix><kind>:{<scope>:<name>}``, so that the keys one Lua script or
one transaction touches share a slot: the keys and the pub/sub channel of one channel
(``{c:...}``), of one instance (``{i:...}``), of one user (``{u:...}``) and of one token
(``{t:...}``); the id counter and its epoch share ``{ids}``. A name holding ``}`` still hashes
all the keys of its scope alike (the tag ends at the first ``}``, the same in each of them) and
the tag is never empty, since the scope comes first.
"""

from __future__ import annotations


class KeySpace:
    """The key and channel names under ``prefix`` (which holds no ``{``); hash-tagged when
    ``cluster`` is true."""

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("a key prefix cannot hold { or }")
        self.prefix = prefix
        self.cluster = cluster

    def _name(self, kind: str, scope: str, name: str) -> str:
        if self.cluster:
            return "%s%s:{%s:%s}" % (self.prefix, kind, scope, name)
        return "%s%s:%s" % (self.prefix, kind, name)

    def _done(self, kind: str, scope: str, slot: str, mark: str) -> str:
        """A key named by ``mark`` alone, kept in the slot of ``scope`` ``slot`` in a cluster
        (where the script that writes it runs)."""
        if self.cluster:
            return "%s%s:{%s:%s}%s" % (self.prefix, kind, scope, slot, mark)
        return "%s%s:%s" % (self.prefix, kind, mark)

    # -- instances (directory, router) -------------------------------------------------------

    def instance(self, instance: str) -> str:
        """``instance`` lives while this key does; also the pub/sub channel it listens on."""
        return self._name("instance", "i", instance)

    def records(self, instance: str) -> str:
        """Hash token -> stream record of the streams of ``instance``."""
        return self._name("streams", "i", instance)

    def open(self, instance: str) -> str:
        """How many streams ``instance`` has open."""
        return self._name("open", "i", instance)

    def withdrawn(self, instance: str) -> str:
        """Hash token -> 1 of the records ``instance`` took back itself at shutdown."""
        return self._name("withdrawn", "i", instance)

    def claimed(self, instance: str) -> str:
        """Set while the records ``instance`` held are another instance's to report."""
        return self._name("claimed", "i", instance)

    @property
    def instances(self) -> str:
        """Set of the instance ids (live ones, and dead ones nobody claimed yet)."""
        return self.prefix + "instances"

    @property
    def dead(self) -> str:
        """Sorted set instance id -> when it was found dead (ms), for the presence scripts."""
        return self.prefix + "dead"

    def token(self, token: str) -> str:
        """The id of the instance holding ``token``."""
        return self._name("token", "t", token)

    # -- channels ------------------------------------------------------------------------------

    @property
    def counter(self) -> str:
        """The last channel event id issued."""
        return self._name("event_id", "ids", "") if self.cluster else self.prefix + "event_id"

    @property
    def epoch(self) -> str:
        """The first id issued since the store was last empty."""
        return self._name("epoch", "ids", "") if self.cluster else self.prefix + "epoch"

    @property
    def pending(self) -> str:
        """Sorted set of the ids taken and not yet published (cluster only), scored by the
        Redis time they were taken at."""
        return self._name("pending", "ids", "")

    def history(self, channel: str) -> str:
        return self._name("h", "c", channel)

    def dropped(self, channel: str) -> str:
        return self._name("d", "c", channel)

    def last(self, channel: str) -> str:
        """The last id of ``channel`` (cluster only: ids are taken per channel there)."""
        return self._name("l", "c", channel)

    def published(self, channel: str, publish: str) -> str:
        """Marks one publish done, so that a retried one is applied once."""
        return self._done("pub", "c", channel, publish)

    def pubsub(self, channel: str) -> str:
        """The pub/sub channel of ``channel``'s events."""
        return self._name("c", "c", channel)

    @property
    def pubsub_prefix(self) -> str:
        """What every :meth:`pubsub` name starts with."""
        return self.prefix + ("c:{c:" if self.cluster else "c:")

    def channel_of(self, pubsub: bytes) -> str:
        """The channel whose :meth:`pubsub` name is ``pubsub``."""
        name = pubsub.decode()[len(self.pubsub_prefix) :]
        return name[:-1] if self.cluster else name

    # -- users and presence --------------------------------------------------------------------

    def user(self, user: str) -> str:
        return self._name("u", "u", user)

    def user_sends(self, user: str) -> str:
        """Stream of the sends to ``user`` of the last seconds, for their streams connecting."""
        return self._name("us", "u", user)

    def user_send_done(self, user: str, send: str) -> str:
        """Marks one send to ``user`` logged (its id), so that a retried one is logged once."""
        return self._done("usd", "u", user, send)

    def presence(self, channel: str) -> list[str]:
        """Members, instances, infos, announced states and the listing of ``channel``."""
        return [self._name(kind, "c", channel) for kind in ("p", "pn", "pi", "pa", "pl")]
