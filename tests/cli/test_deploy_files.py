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
