"""``tornado-sse check`` against a real Sentinel and a real Redis Cluster: the primary the
Sentinels name must answer, and the cluster must say ok with every slot served."""

from __future__ import annotations

import time

from tests.cluster.test_survival import Sentinel
from tests.integration.test_check import check, labelled
from tests.support.ports import unused_port

#: The backend is not what these tests look at: nothing listens there.
NO_BACKEND = {"CALLBACK_URL": "http://127.0.0.1:%d/cb" % unused_port()}


def test_check_finds_the_primary_the_sentinels_name(redis_server, tmp_path):
    sentinel = Sentinel(redis_server, str(tmp_path))
    try:
        env = {
            **NO_BACKEND,
            "REDIS_SENTINELS": "127.0.0.1:%d" % sentinel.port,
            "REDIS_SENTINEL_MASTER": "mymaster",
        }
        found = labelled(check(env), "ok")
        assert (
            "the Sentinels name 127.0.0.1:%d as primary of 'mymaster', and it answers PING"
            % (redis_server.port)
            in found
        ), found
        wrong = labelled(check({**env, "REDIS_SENTINEL_MASTER": "other"}), "FAIL")
        assert any(line.startswith("the Sentinels name no primary for 'other'") for line in wrong)
        redis_server.kill()
        down = labelled(check(env), "FAIL")
        assert any("does not answer" in line or "no primary" in line for line in down), down
    finally:
        sentinel.stop()


def test_check_reads_the_state_and_slots_of_a_redis_cluster(redis_cluster_nodes):
    env = {**NO_BACKEND, "REDIS_CLUSTER": "true", "REDIS_URL": redis_cluster_nodes.url}
    assert "the Redis Cluster is ok: 16384 of 16384 slots served, 3 nodes" in labelled(
        check(env), "ok"
    )
    first, second, third = redis_cluster_nodes.nodes
    third.kill()
    deadline = time.monotonic() + 20
    while b"cluster_state:fail" not in redis_cluster_nodes.info(first):  # bounded
        assert time.monotonic() < deadline, "the cluster never noticed the lost node"
        time.sleep(0.1)
    result = check(env)
    assert result.returncode == 1
    failed = labelled(result, "FAIL")
    assert any(line.startswith("the Redis Cluster is not usable: state fail") for line in failed)
    first.kill()
    second.kill()
    failed = labelled(check(env), "FAIL")
    assert any(line.startswith("no node of the Redis Cluster answers") for line in failed)
