"""deploy/ brings up the API and web console too (Docker cannot run here: the files are read
as Docker would read them): the image listens on every interface inside the container, on
the port it exposes, and compose publishes it for every node."""

from __future__ import annotations

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_image_serves_the_console_on_a_published_port():
    with open(os.path.join(ROOT, "deploy", "Dockerfile"), encoding="utf-8") as handle:
        text = handle.read()
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())
    command = json.loads(re.search(r"^CMD (\[.+\])$", text, re.M).group(1))
    assert command[command.index("--api-host") + 1] == "0.0.0.0"
    api_port = command[command.index("--api-port") + 1]
    assert {"9000", "9003", api_port} <= exposed
    assert "HEALTHCHECK" in text
    with open(os.path.join(ROOT, "deploy", "compose.yaml"), encoding="utf-8") as handle:
        compose = handle.read()
    # Each gateway node's published ports (a flow list, as JSON).
    nodes = re.findall(r"^  (node\d+):\n(?:    .*\n)*?    ports: (\[.*\])$", compose, re.M)
    assert len(nodes) == 2, nodes
    for name, ports in nodes:
        assert any(p.endswith(f":{api_port}") for p in json.loads(ports)), (name, ports)


def test_the_balancer_in_front_tells_the_nodes_each_chargers_address():
    """HAProxy passes chargers to the nodes with PROXY v2 headers; the nodes trust exactly
    the balancer's fixed address (nobody else on the network can claim an address)."""
    with open(os.path.join(ROOT, "deploy", "haproxy.cfg"), encoding="utf-8") as handle:
        config = handle.read()
    assert re.search(r"^\s+mode tcp$", config, re.M)
    assert "send-proxy-v2" in config
    servers = re.findall(r"^\s+server (node\d+) \1:9000", config, re.M)
    with open(os.path.join(ROOT, "deploy", "compose.yaml"), encoding="utf-8") as handle:
        compose = handle.read()
    balancer = re.search(r"ipv4_address: ([\d.]+)", compose).group(1)
    assert re.search(rf"COCHARGE_TRUSTED_PROXIES: {re.escape(balancer)}$", compose, re.M)
    nodes = sorted(re.findall(r"^  (node\d+):$", compose, re.M))
    # Every node in both backends: the checked one and the one for when every check failed.
    assert sorted(servers) == sorted(nodes * 2)
    assert '"9000:9000"' in compose.split("  node1:")[0]  # published by the balancer only
