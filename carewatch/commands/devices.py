"""`carewatch devices provision --config REG --out DIR`: broker credentials and ACL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from carewatch.commands._common import load


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devices", help="device credentials and broker access control")
    dsub = p.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    pr = dsub.add_parser(
        "provision",
        help="per-device passwords, a hashed Mosquitto password file, an ACL, a broker config",
    )
    pr.add_argument("--config", required=True, help="registry / settings YAML file")
    pr.add_argument("--out", required=True, help="output directory (secrets written 0600)")
    pr.add_argument("--gateway", action="append", default=[], metavar="NAME[:TOWN,...]",
                    help="a gateway account publishing for all devices (or those of TOWNs)")
    pr.add_argument("--no-console", action="store_true", help="no console account")
    pr.add_argument("--rotate", action="store_true", help="new passwords for every account")
    pr.add_argument("--port", type=int, default=1883, help="listener port in mosquitto.conf")
    pr.add_argument("--bind", default="127.0.0.1", help="listener address in mosquitto.conf")
    pr.add_argument("--tls-dir", help="directory from scripts/make-test-ca.sh "
                    "(ca.crt, server.crt, server.key): the listener speaks TLS")
    pr.add_argument("--require-certificate", action="store_true",
                    help="with --tls-dir: clients must present a certificate from the CA")
    pr.set_defaults(func=provision_main)


def provision_main(args: argparse.Namespace) -> int:
    from carewatch.security.acl import AclError
    from carewatch.security.provision import GatewaySpec, provision
    from ingest.broker import BrokerTls

    config = load(args.config)
    tls = None
    if args.tls_dir:
        d = Path(args.tls_dir)
        tls = BrokerTls(d / "server.crt", d / "server.key", d / "ca.crt",
                        require_certificate=args.require_certificate)
        missing = [p for p in (tls.certfile, tls.keyfile, tls.cafile) if not p.exists()]
        if missing:
            print(f"missing TLS files: {', '.join(map(str, missing))} "
                  "(make them with scripts/make-test-ca.sh)", file=sys.stderr)
            return 2
    try:
        gateways = [GatewaySpec.parse(g) for g in args.gateway]
        done = provision(config, Path(args.out), gateways=gateways,
                         console=not args.no_console, rotate=args.rotate, tls=tls,
                         port=args.port, bind=args.bind)
    except AclError as exc:
        print(f"cannot provision: {exc}", file=sys.stderr)
        return 2
    roles: dict[str, int] = {}
    for a in done.accounts:
        roles[a.role] = roles.get(a.role, 0) + 1
    summary = ", ".join(f"{n} {r}" for r, n in roles.items())
    print(f"provisioned {len(done.accounts)} accounts ({summary}) in {done.out}\n"
          f"  password file {done.password_file}\n  ACL {done.acl_file}\n"
          f"  broker config {done.conf_file} (anonymous access off)\n"
          f"  passwords in {done.out / 'passwords'} (mode 0600; never printed)")
    return 0
