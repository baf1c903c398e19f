"""Which instance holds each token, and which instances are alive.

Every instance (one gateway process) has a random id and keeps ``<prefix>instance:<id>`` alive
(a key with a short TTL, refreshed every few seconds), and maps each of its tokens to itself with
``<prefix>token:<token>`` (refreshed while it lives, and written again whenever the link comes
back, since Redis may have lost it). A token whose holder's key has expired has no holder.
"""

from __future__ import annotations

import contextlib

from redis.exceptions import RedisError

from .link import RedisLink

#: Seconds an instance stays "alive" without refreshing its key: the longest a dead instance's
#: tokens keep answering anything but 404.
INSTANCE_TTL = 15
#: Seconds between refreshes of the instance key.
INSTANCE_REFRESH = 5
#: Seconds a token key lives without refresh (refreshed every third of it).
TOKEN_TTL = 3600
#: Token keys written per pipeline round trip when re-registering.
BATCH = 1000

# KEYS: token key. ARGV: instance key prefix. The holder's id if it is alive, else nil (and the
# stale token key is deleted).
HOLDER_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
if redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
redis.call('DEL', KEYS[1])
return nil
"""


class TokenDirectory:
    """The token keys of one instance and its liveness key."""

    def __init__(self, link: RedisLink, instance: str, prefix: str) -> None:
        self.link = link
        self.instance = instance
        self.prefix = prefix
        self._tokens: set[str] = set()
        self._holder = link.client.register_script(HOLDER_SCRIPT)
        link.on_up(self._announce)
        link.every(INSTANCE_REFRESH, self._refresh_instance)
        link.every(TOKEN_TTL / 3, self._register_all)
        link.on_close(self._leave)

    def _instance_key(self, instance: str) -> str:
        return "%sinstance:%s" % (self.prefix, instance)

    def _token_key(self, token: str) -> str:
        return "%stoken:%s" % (self.prefix, token)

    async def register(self, token: str) -> None:
        """Map ``token`` to this instance; raises ``BrokerUnavailable`` if Redis cannot."""
        self.link.require()
        try:
            await self.link.client.set(self._token_key(token), self.instance, ex=TOKEN_TTL)
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        self._tokens.add(token)

    def unregister(self, token: str) -> None:
        """Forget ``token`` now; its key is deleted in the background (or expires)."""
        self._tokens.discard(token)
        if self.link.up:
            self.link.spawn(self._forget(token))

    async def holder(self, token: str) -> str | None:
        """The id of the live instance holding ``token``, if any (raises ``RedisError``)."""
        owner = await self._holder(keys=[self._token_key(token)], args=[self._instance_key("")])
        return owner.decode() if owner is not None else None

    async def _forget(self, token: str) -> None:
        # If this fails the key expires by itself, and lookups check that its holder lives.
        with contextlib.suppress(RedisError):
            await self.link.client.delete(self._token_key(token))

    async def _announce(self) -> None:
        await self._refresh_instance()
        await self._register_all()

    async def _refresh_instance(self) -> None:
        await self.link.client.set(self._instance_key(self.instance), b"1", ex=INSTANCE_TTL)

    async def _register_all(self) -> None:
        tokens = list(self._tokens)
        for start in range(0, len(tokens), BATCH):
            async with self.link.client.pipeline(transaction=False) as pipe:
                for token in tokens[start : start + BATCH]:
                    pipe.set(self._token_key(token), self.instance, ex=TOKEN_TTL)
                await pipe.execute()

    async def _leave(self) -> None:
        # Without the instance key, the others answer 404 for any token key left behind.
        await self.link.client.delete(self._instance_key(self.instance))
