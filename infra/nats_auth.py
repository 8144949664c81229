#!/usr/bin/env python3
"""Per-role NATS identities for msgr: one user per role with the least it needs.

    nats_auth.py SECRETS_DIR CONF...

Makes (once) a random password per role in SECRETS_DIR/<role>.pass (0600) and
appends an `authorization` block granting each role its permissions to every
CONF given (a copy the caller owns, e.g. data/nats/server.conf), which it
leaves 0600 too. Run again, it reuses the passwords, so restarts keep working.

The roles:
- edge: publishes commands (msgr.v1.in.>, batches on msgr.v2.in.>), requests
  (msgr.v1.rpc.>), typing (to the workers), presence and the users it holds
  (msgr.v2.route.*, full lists to a worker's msgr.v2.routes.full.*); reads the
  command stream's messages (a lost send's lookup), watches the
  revoked-sessions bucket and keeps the presence bucket; receives inbox
  deliveries (per user, or per edge), route-list requests, presence changes
  and replies.
- worker: owns JetStream (streams, consumers, buckets), answers requests,
  fans out typing, publishes events, deliveries and presence (a user hiding
  theirs), follows the edges' routes. It may not publish commands.
- integrator: reads events (msgr.v1.evt.>, msgr.v2.evt.>) and may own pull consumers on
  MSGR_IN under the names MSGR_INTEGRATOR_CONSUMERS lists (comma-separated,
  default AUDIT), and those only: the sequencers' SEQ_* consumers are out of
  its reach (pulling or acking there would take commands from a partition).
  It publishes nothing onto the bus's subjects, makes no requests and deletes
  no consumers.
"""

import os
import re
import secrets
import sys
from pathlib import Path


def integrator_consumers() -> list:
    names = [n.strip() for n in os.environ.get("MSGR_INTEGRATOR_CONSUMERS", "AUDIT").split(",")]
    names = [n for n in names if n]
    for n in names:
        # A consumer name is one subject token; SEQ_ is the sequencers'.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) or n.upper().startswith("SEQ_"):
            sys.exit(f"MSGR_INTEGRATOR_CONSUMERS: {n!r} is not a name an integrator may use")
    return names


def integrator_publish(names: list) -> list:
    allow = [
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.INFO.MSGR_IN",
        "$JS.FC.MSGR_IN.>",
    ]
    for n in names:
        allow += [
            f"$JS.API.CONSUMER.CREATE.MSGR_IN.{n}",
            f"$JS.API.CONSUMER.CREATE.MSGR_IN.{n}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.MSGR_IN.{n}",
            f"$JS.API.CONSUMER.INFO.MSGR_IN.{n}",
            f"$JS.API.CONSUMER.MSG.NEXT.MSGR_IN.{n}",
            f"$JS.ACK.MSGR_IN.{n}.>",
        ]
    return allow

ROLES = {
    "edge": {
        "publish": [
            "msgr.v1.in.>",
            "msgr.v2.in.>",
            "msgr.v2.route.*",
            "msgr.v2.routes.full.*",
            "msgr.v1.rpc.>",
            "msgr.v1.deliver.user.*",
            "msgr.v1.typing.*",
            "msgr.v1.presence.*",
            "$KV.MSGR_PRESENCE.>",
            "$JS.API.STREAM.INFO.KV_MSGR_PRESENCE",
            "$JS.API.DIRECT.GET.KV_MSGR_PRESENCE.>",
            "$JS.API.STREAM.MSG.GET.KV_MSGR_PRESENCE",
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.MSGR_IN",
            "$JS.API.STREAM.MSG.GET.MSGR_IN",
            "$JS.API.STREAM.INFO.KV_MSGR_REVOKED",
            "$JS.API.CONSUMER.CREATE.KV_MSGR_REVOKED",
            "$JS.API.CONSUMER.CREATE.KV_MSGR_REVOKED.>",
            "$JS.API.CONSUMER.DELETE.KV_MSGR_REVOKED.>",
            "$JS.FC.KV_MSGR_REVOKED.>",
        ],
        "subscribe": [
            "_INBOX.>",
            "msgr.v1.deliver.user.*",
            "msgr.v2.deliver.edge.*",
            "msgr.v2.routes.sync",
            "msgr.v1.presence.*",
        ],
    },
    "worker": {
        "publish": {
            "allow": [
                "$JS.>",
                "$KV.>",
                "_INBOX.>",
                "msgr.v1.evt.>",
                "msgr.v2.evt.>",
                "msgr.v1.deliver.>",
                "msgr.v2.deliver.>",
                "msgr.v2.routes.sync",
                "msgr.v1.presence.*",
            ],
            "deny": ["msgr.v1.in.>", "msgr.v2.in.>"],
        },
        "subscribe": [
            "_INBOX.>",
            "msgr.v1.rpc.>",
            "msgr.v1.typing.*",
            "msgr.v2.route.*",
            "msgr.v2.routes.full.*",
        ],
    },
    "integrator": {
        "publish": None,  # integrator_publish(), from the environment
        "subscribe": ["_INBOX.>", "msgr.v1.evt.>", "msgr.v2.evt.>"],
    },
}

MARK = "# --- msgr roles (infra/nats_auth.py) ---"


def quote(items):
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def perm(p):
    if isinstance(p, dict):
        return "{ allow: %s, deny: %s }" % (quote(p["allow"]), quote(p["deny"]))
    return "{ allow: %s }" % quote(p)


def password(secrets_dir: Path, role: str) -> str:
    f = secrets_dir / f"{role}.pass"
    if f.exists():
        return f.read_text().strip()
    pw = secrets.token_urlsafe(24)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(pw + "\n")
    return pw


def block(secrets_dir: Path) -> str:
    users = []
    roles = dict(ROLES)
    roles["integrator"] = dict(ROLES["integrator"], publish=integrator_publish(integrator_consumers()))
    for role, p in roles.items():
        users.append(
            '    { user: "%s", password: "%s", permissions: { publish: %s, subscribe: %s } }'
            % (role, password(secrets_dir, role), perm(p["publish"]), perm(p["subscribe"]))
        )
    return "\n".join([MARK, "authorization {", "  users: [", *users, "  ]", "}", ""])


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    secrets_dir = Path(sys.argv[1])
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    auth = block(secrets_dir)
    for conf in map(Path, sys.argv[2:]):
        text = conf.read_text()
        if MARK in text:
            text = text[: text.index(MARK)]
        conf.write_text(text.rstrip("\n") + "\n\n" + auth)
        os.chmod(conf, 0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
