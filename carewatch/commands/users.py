"""`carewatch users …`: console passwords (argon2) and API tokens, in <data_dir>/users.json."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.users import UserStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="console users: set passwords, issue API tokens")
    cmds = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", required=True, help="registry / settings YAML file")
        q.add_argument("--data-dir", help="where users.json lives (default: the config's)")

    q = cmds.add_parser("set-password", help="set a staff member's console password")
    common(q)
    q.add_argument("--staff", required=True, help="staff id from the registry")
    q.add_argument("--password-file", help="read the password from this file (first line); "
                   "default: prompt (or one line on stdin when not a terminal)")
    q.set_defaults(func=set_password)
    q = cmds.add_parser("add-token", help="issue an API token acting as a staff member")
    common(q)
    q.add_argument("--staff", required=True, help="staff id whose scope the token gets")
    q.add_argument("--name", required=True, help="which system uses it (shown in the audit)")
    q.set_defaults(func=add_token)
    q = cmds.add_parser("revoke-token", help="revoke an API token by id")
    common(q)
    q.add_argument("--id", required=True, help="token id (see `carewatch users list`)")
    q.set_defaults(func=revoke_token)
    q = cmds.add_parser("list", help="staff with a console password, and API tokens")
    common(q)
    q.set_defaults(func=list_users)


def _store(args: argparse.Namespace) -> UserStore:
    from carewatch.commands._common import load
    from console.users import UserStore

    config = load(args.config)
    data_dir = Path(args.data_dir or config.storage.data_dir)
    return UserStore(data_dir / "users.json", config)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        return Path(args.password_file).read_text(encoding="utf-8").splitlines()[0]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"new password for {args.staff}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def set_password(args: argparse.Namespace) -> int:
    from console.users import UsersError

    store = _store(args)
    try:
        store.set_password(args.staff, _read_password(args))
    except (UsersError, ValueError, IndexError) as exc:
        print(f"carewatch users: {exc or 'no password given'}", file=sys.stderr)
        return 2
    print(f"password set for {args.staff} in {store.path}")
    return 0


def add_token(args: argparse.Namespace) -> int:
    from console.users import UsersError

    store = _store(args)
    try:
        token = store.add_token(args.staff, args.name)
    except UsersError as exc:
        print(f"carewatch users: {exc}", file=sys.stderr)
        return 2
    print(token)
    print("(shown once; send it as `Authorization: Bearer <token>`)", file=sys.stderr)
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    store = _store(args)
    if not store.revoke_token(args.id):
        print(f"carewatch users: no token {args.id}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def list_users(args: argparse.Namespace) -> int:
    store = _store(args)
    for sid, staff in store.staff.items():
        if store.has_password(sid):
            demo = " (demo password)" if sid in store.demo_users() else ""
            print(f"user  {sid:28s} tier {staff.tier}{demo}")
    for tok in store.tokens():
        print(f"token {tok['id']:28s} staff {tok['staff']} name {tok['name']}")
    return 0
