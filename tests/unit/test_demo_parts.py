"""The demo's parts that need no processes: its port check after a run that just ended, and
its policy, which the agent's own model must accept."""

from __future__ import annotations

import socket

import pytest

from dockyard.agent.protocol.vm import VmLifecyclePolicy
from dockyard.cloud import demo


def test_a_port_left_in_time_wait_counts_as_free_as_uvicorn_would_bind_it() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its side of the connection is in TIME-WAIT
    client.close()
    server.close()

    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # the check the demo made before
    assert demo.port_free(port)


def test_a_port_something_listens_on_is_in_use() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not demo.port_free(port)
        assert demo.free_port(port) != port


@pytest.mark.parametrize("scale", [1440.0, 14400.0])
def test_the_demo_policy_is_valid_and_a_demo_day_can_count(scale: float) -> None:
    policy = VmLifecyclePolicy.model_validate(demo.demo_policy(demo.NOTICE_S))
    expected = 86400 // policy.sample_interval_s
    rounds_a_day = 86400 / scale / demo.worker_pause_s(scale)
    # Each hour's sample is taken in a round of its own: a day holds its 24.
    assert rounds_a_day >= expected
    assert policy.thresholds.net > 146.5  # libvirt's test VM's steady network counter
    assert policy.thresholds.disk > 73.3  # and its disk's
