"""Provision broker credentials from the registry: passwords, password file, ACL, config.

Output directory layout (`carewatch devices provision --config REG --out DIR`):

    DIR/passwords/{user}.pw   one random password each, mode 0600 (directory 0700)
    DIR/mosquitto.passwd      `user:$7$...` hashes (mosquitto_passwd format), mode 0600
    DIR/mosquitto.acl         least-privilege ACL (carewatch.security.acl)
    DIR/accounts.json         user names, roles and devices (no secrets)
    DIR/mosquitto.conf        a broker config using the two files, anonymous access off

Re-running keeps existing passwords (devices already flashed keep working) unless
`rotate=True`; devices gone from the registry lose their account.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from carewatch.security.acl import (
    CONSOLE_USER,
    GATEWAY_PREFIX,
    PIPELINE_USER,
    Account,
    AclError,
    acl_text,
    check_id,
    device_topics,
)
from carewatch.security.passwd import new_password, passwd_line
from config.models import Config
from ingest.broker import BrokerAuth, BrokerTls, broker_config


@dataclass(frozen=True)
class GatewaySpec:
    """A gateway account carrying every device (towns empty) or those of some towns."""

    name: str
    towns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GatewaySpec:
        """`NAME` or `NAME:town1,town2`."""
        name, _, towns = text.partition(":")
        check_id(name, "gateway name")
        return cls(name, tuple(check_id(t, "town id") for t in towns.split(",") if t))


@dataclass
class Provisioned:
    out: Path
    accounts: list[Account]
    password_file: Path
    acl_file: Path
    conf_file: Path

    def secret_path(self, username: str) -> Path:
        return self.out / "passwords" / f"{username}.pw"

    @property
    def auth(self) -> BrokerAuth:
        return BrokerAuth(self.password_file, self.acl_file)


def accounts_for(config: Config, gateways: Sequence[GatewaySpec] = (),
                 console: bool = True) -> list[Account]:
    """Every account the registry needs: pipeline, console, gateways, one per device."""
    devices = [(r.town, r.device) for r in config.residents]
    for town, dev in devices:
        device_topics(town, dev)  # validates ids and refuses reserved device ids
    accounts = [Account(PIPELINE_USER, "pipeline")]
    if console:
        accounts.append(Account(CONSOLE_USER, "console"))
    for g in gateways:
        carried = tuple(d for d in devices if not g.towns or d[0] in g.towns)
        accounts.append(Account(GATEWAY_PREFIX + g.name, "gateway", carried))
    seen: set[str] = set()
    for town, dev in devices:
        if dev in seen:
            raise AclError(f"device id {dev!r} appears twice in the registry")
        seen.add(dev)
        accounts.append(Account(dev, "device", ((town, dev),)))
    return accounts


def _write_private(path: Path, text: str) -> None:
    """Create or replace `path` with mode 0600 from the first byte (no readable window)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def provision(config: Config, out: Path, *, gateways: Sequence[GatewaySpec] = (),
              console: bool = True, rotate: bool = False, tls: BrokerTls | None = None,
              port: int = 1883, bind: str = "127.0.0.1",
              data_dir: Path | None = None) -> Provisioned:
    """Write credentials, password file, ACL and broker config for `config` into `out`."""
    out = Path(out)
    pw_dir = out / "passwords"
    pw_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pw_dir, 0o700)
    accounts = accounts_for(config, gateways, console)
    wanted = {a.username for a in accounts}
    for stale in pw_dir.glob("*.pw"):
        if stale.stem not in wanted:
            stale.unlink()
    lines = []
    for acc in accounts:
        path = pw_dir / f"{acc.username}.pw"
        if rotate or not path.exists():
            _write_private(path, new_password() + "\n")
        password = path.read_text(encoding="utf-8").strip()
        lines.append(passwd_line(acc.username, password))
    password_file, acl_file = out / "mosquitto.passwd", out / "mosquitto.acl"
    _write_private(password_file, "\n".join(lines) + "\n")
    _write_private(acl_file, acl_text(accounts))
    manifest = [{"username": a.username, "role": a.role,
                 "devices": [list(d) for d in a.devices]} for a in accounts]
    (out / "accounts.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    conf_file = out / "mosquitto.conf"
    conf_file.write_text(broker_config(port, data_dir or out / "broker-data", auth=BrokerAuth(
        password_file, acl_file), tls=tls, bind=bind))
    return Provisioned(out, accounts, password_file, acl_file, conf_file)
