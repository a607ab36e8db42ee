"""The configuration file (`--config FILE`, env COCHARGE_CONFIG): TOML, every setting of the
gateway and the CLI's defaults in one place (docs/config.md).

    db = "postgresql://cocharge@db/cocharge"   # as COCHARGE_DB; --db and the env win
    [gateway]                                  # any GatewaySettings field, by its name
    heartbeat_interval_s = 300
    [gateway.idle_fee]
    fen_per_minute = 50
    [serve]                                    # `cocharge serve` options that are files
    tls_cert = "/etc/cocharge/gw.pem"
    [cli]
    max_amount_cny = 100000

Precedence: a command-line option > its environment variable > the file > the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cocharge.config import GatewaySettings

TOP = {"db": "database URL or SQLite file (as COCHARGE_DB)",
       "mqtt": "broker URL (as COCHARGE_MQTT)"}
SERVE = {"tls_cert": "PEM certificate (wss://)", "tls_key": "PEM private key",
         "tls_rsa_cert": "a second, RSA, PEM certificate", "tls_rsa_key": "its private key"}
CLI = {"max_amount_cny": "the largest amount of money an operator may type (CNY)"}
CLI_DEFAULTS: dict[str, Any] = {"max_amount_cny": 100_000}


class ConfigError(ValueError):
    """The file cannot be used; the message names the file, the key and the fix."""


@dataclass
class Config:
    path: str | None = None
    db: str | None = None
    mqtt: str | None = None
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    serve: dict[str, str] = field(default_factory=dict)
    cli: dict[str, Any] = field(default_factory=lambda: dict(CLI_DEFAULTS))
    from_file: set[str] = field(default_factory=set)  # the keys the file set ("gateway.port")


def _kind(hint: Any) -> set[type]:
    """The plain types a TOML value may have for a field (None is never written in TOML)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return {a for a in typing.get_args(hint) if a is not type(None)}
    return {hint}


def _value(where: str, hint: Any, value: Any, path: str) -> Any:
    allowed = _kind(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {where} is a table ([{where}]) of "
                              f"{', '.join(f.name for f in dataclasses.fields(hint))}")
        return _table(where, hint, value, path)
    if bool in allowed:
        if isinstance(value, bool):
            return value
    elif int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif str in allowed and isinstance(value, str):
        return value
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
    wanted = " or ".join(sorted(names.get(t.__name__, t.__name__) for t in allowed))
    raise ConfigError(f"{path}: {where} must be {wanted}, not {value!r}")


def _table(where: str, cls: type, values: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{path}: unknown setting {where}.{key}"
                              + (f" (did you mean {where}.{close[0]}?)" if close else
                                 f"; see `cocharge config check` for the {where} settings"))
        out[key] = _value(f"{where}.{key}", hints[key], value, path)
    return cls(**out)


def load(path: str | None) -> Config:
    """The configuration in `path` (None: COCHARGE_CONFIG, else none: every default)."""
    path = path or os.environ.get("COCHARGE_CONFIG") or None
    config = Config(path=path)
    if path is None:
        return config
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"no configuration file {path}: check --config / COCHARGE_CONFIG"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    sections = {"gateway", "serve", "cli"}
    for key, value in data.items():
        if key in TOP:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: {key} must be a non-empty string")
            setattr(config, key, value)
            config.from_file.add(key)
        elif key not in sections:
            close = difflib.get_close_matches(key, [*TOP, *sections], n=1)
            raise ConfigError(f"{path}: unknown setting {key}"
                              + (f" (did you mean {close[0]}?)" if close else ""))
        elif not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} is a table: write [{key}]")
    gateway = data.get("gateway", {})
    config.gateway = _table("gateway", GatewaySettings, gateway, path)
    config.from_file |= {f"gateway.{k}" for k in gateway}
    if config.mqtt and "mqtt_url" not in gateway:
        config.gateway = dataclasses.replace(config.gateway, mqtt_url=config.mqtt)
    for section, allowed, target in (("serve", SERVE, config.serve), ("cli", CLI, config.cli)):
        for key, value in data.get(section, {}).items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                raise ConfigError(f"{path}: unknown setting {section}.{key}"
                                  + (f" (did you mean {section}.{close[0]}?)" if close else
                                     f"; {section} has {', '.join(allowed)}"))
            expected = type(CLI_DEFAULTS.get(key, ""))
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ConfigError(f"{path}: {section}.{key} must be "
                                  f"{'an integer' if expected is int else 'a string'}")
            target[key] = value
            config.from_file.add(f"{section}.{key}")
    if config.cli["max_amount_cny"] <= 0:
        raise ConfigError(f"{path}: cli.max_amount_cny must be positive")
    return config


def effective(config: Config) -> dict[str, Any]:
    """Every setting with its value in force, as `cocharge config check` prints it."""
    shown: dict[str, Any] = {"config_file": config.path or "(none)",
                             "db": os.environ.get("COCHARGE_DB") or config.db or "./cocharge.db",
                             "mqtt": os.environ.get("COCHARGE_MQTT") or config.mqtt}
    for f in dataclasses.fields(GatewaySettings):
        value = getattr(config.gateway, f.name)
        nested = dataclasses.is_dataclass(value) and not isinstance(value, type)
        shown[f"gateway.{f.name}"] = dataclasses.asdict(value) if nested else value
    for key in SERVE:
        shown[f"serve.{key}"] = config.serve.get(key)
    for key, value in config.cli.items():
        shown[f"cli.{key}"] = value
    return shown
