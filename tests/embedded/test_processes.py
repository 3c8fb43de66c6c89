"""The embedded launcher's port helpers: free ports, never the reserved 6379.

Real sockets; nothing is mocked.
"""

from __future__ import annotations

import socket

import embedded.processes


def test_pick_free_port_is_bindable_and_never_6379() -> None:
    ports = {embedded.processes.pick_free_port() for _ in range(20)}

    assert 6379 not in ports
    for port in ports:
        assert embedded.processes.port_is_free("127.0.0.1", port)


def test_pick_free_port_avoids_the_ports_it_is_told_to() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken_port = taken.getsockname()[1]
        port = embedded.processes.pick_free_port(avoid=frozenset({taken_port, 6379}))

        assert port != taken_port
        assert not embedded.processes.port_is_free("127.0.0.1", taken_port)
