"""The mqtt:// URL that names a broker and a topic prefix: the gateway's --mqtt and the site
simulator's (a neutral module: the simulators import nothing of the server)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PREFIX = "cocharge/v1"


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    prefix: str = DEFAULT_PREFIX

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}/{self.prefix}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt://[user:pass@]host[:port][/prefix]`; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"--mqtt {url!r}: write it as mqtt://[user:pass@]host[:port][/prefix]")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ValueError(f"--mqtt {url!r}: the port must be a number from 1 to 65535") from None
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if "#" in url or parts.query or "+" in prefix or "//" in prefix:
        raise ValueError(f"--mqtt {url!r}: the prefix may not contain +, # or empty levels")
    return MqttTarget(parts.hostname, port, unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None, prefix)
