"""`recsys auth new-key | revoke | token`: manage API keys (hashes only at rest) and mint HS256 bearer tokens."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recsys.common import config
from recsys.common.auth import SCOPES, ApiKey, mint_jwt, new_api_key, parse_keys_document
from recsys.common.config import ConfigError
from recsys.common.errors import CliError


def _read_keys(path: Path) -> dict[str, ApiKey]:
    if not path.exists():
        return {}
    try:
        return parse_keys_document(path.read_text(), str(path))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _write_keys(path: Path, keys: dict[str, ApiKey]) -> None:
    """Write the document atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"keys": [k.record() for k in keys.values()]}, handle, indent=2)
        handle.write("\n")
    tmp.replace(path)


def _new_key(args: argparse.Namespace) -> int:
    try:
        key = new_api_key(args.id)
        record = ApiKey.for_key(key, args.scope, args.rate_per_s, args.burst)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    if args.keys_file:
        path = Path(args.keys_file)
        keys = _read_keys(path)
        if args.id in keys and not args.replace:
            raise CliError(f"key id {args.id} exists in {path} (--replace to rotate it)")
        keys[args.id] = record
        _write_keys(path, keys)
        print(f"added {args.id} to {path} (scopes: {', '.join(sorted(record.scopes)) or 'none'})", file=sys.stderr)
    else:
        print(json.dumps(record.record()), file=sys.stderr)
    print("the key is shown once; store it in the caller's secret store:", file=sys.stderr)
    print(key)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path = Path(args.keys_file)
    keys = _read_keys(path)
    if keys.pop(args.id, None) is None:
        raise CliError(f"no key {args.id} in {path}")
    _write_keys(path, keys)
    print(f"revoked {args.id} ({path}; gateways re-read the file within seconds)", file=sys.stderr)
    return 0


def _token(args: argparse.Namespace) -> int:
    if args.secret_file:
        secret = Path(args.secret_file).read_bytes().strip()
    elif config.AUTH_JWT_SECRET_FILE.str():
        secret = Path(config.AUTH_JWT_SECRET_FILE.str()).read_bytes().strip()
    else:
        secret = config.AUTH_JWT_SECRET.str().encode()
    if len(secret) < 32:
        raise CliError("a JWT secret of at least 32 bytes is needed (--secret-file or RECSYS_AUTH_JWT_SECRET[_FILE])")
    print(mint_jwt(secret, args.sub, args.scope, args.ttl_s, issuer=args.issuer or config.AUTH_JWT_ISSUER.str(),
                   audience=args.audience or config.AUTH_JWT_AUDIENCE.str()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    auth = subparsers.add_parser("auth", help="API keys and bearer tokens of the public RPCs")
    sub = auth.add_subparsers(dest="auth_command", required=True)

    new = sub.add_parser("new-key", help="create an API key: prints it once, stores only its hash")
    new.add_argument("--id", required=True, help="key id (logged with every refusal; 1-64 of A-Z a-z 0-9 _ -)")
    new.add_argument("--scope", action="append", choices=SCOPES, default=[], help="granted scope (repeatable)")
    new.add_argument("--rate-per-s", type=float, default=None, help="this key's rate limit (0 = none)")
    new.add_argument("--burst", type=float, default=None, help="this key's bucket size")
    new.add_argument("--keys-file", help="add the hashed record to this keys document (created 0600)")
    new.add_argument("--replace", action="store_true", help="rotate an existing key id")
    new.set_defaults(func=_new_key)

    revoke = sub.add_parser("revoke", help="remove a key from a keys document")
    revoke.add_argument("--id", required=True)
    revoke.add_argument("--keys-file", required=True)
    revoke.set_defaults(func=_revoke)

    token = sub.add_parser("token", help="mint an HS256 bearer token (for tests and demos)")
    token.add_argument("--sub", required=True, help="caller id (the token's `sub`)")
    token.add_argument("--scope", action="append", choices=SCOPES, default=[], help="granted scope (repeatable)")
    token.add_argument("--ttl-s", type=float, default=3600.0)
    token.add_argument("--issuer", default="")
    token.add_argument("--audience", default="")
    token.add_argument("--secret-file", help="HS256 secret (default RECSYS_AUTH_JWT_SECRET[_FILE])")
    token.set_defaults(func=_token)
