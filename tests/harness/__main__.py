"""Start or stop the two real-backend stacks by hand (for `make demo` and debugging).

  /usr/bin/python3 -m tests.harness up   --state DIR [--legacy-addr A] [--new-addr B]
                                         [--port-offset N] [--trusted CIDR ...]
  /usr/bin/python3 -m tests.harness down --state DIR [--purge]
  /usr/bin/python3 -m tests.harness show --state DIR

"up" starts a legacy stack (xclient mode) and a new stack (proxy mode) in parallel,
records them in DIR/harness.json and prints that JSON on stdout. The daemons keep
running after "up" exits. "down" stops the stacks recorded there (by the masters' pid
files, or the recorded pids when a pid file is gone; each pid is checked before it is
signalled). Run from the top of the repository, as root.
"""

import argparse
import json
import os
import shutil
import sys
import time

from .backends import (BackendError, DEFAULT_TRUSTED, MailStack, check_world_traversable,
                       missing_prerequisites, start_stacks, stop_stacks, write_description)
from .pki import Pki

DESCRIPTION_FILE = "harness.json"


def build_stacks(state, legacy_addr, new_addr, port_offset, trusted):
    """The standard pair: legacy (xclient) and new (proxy), with CA-signed certificates."""
    pki = Pki(os.path.join(state, "pki"))
    # Both stacks on one address would collide on every port: move "new" out of the way.
    new_offset = port_offset + (10000 if legacy_addr == new_addr else 0)
    stacks = []
    for name, addr, mode, offset in (("legacy", legacy_addr, "xclient", port_offset),
                                     ("new", new_addr, "proxy", new_offset)):
        hostname = f"{name}.rb.test"
        cert, key = pki.issue(hostname, [hostname, addr])
        stacks.append(MailStack(name, addr, mode, state, trusted=trusted, port_offset=offset,
                                cert=cert, key=key, ca_file=pki.ca_file, hostname=hostname))
    return pki, stacks


def cmd_up(args):
    problems = missing_prerequisites()
    if problems:
        raise BackendError("cannot start the backends:\n  " + "\n  ".join(problems))
    state = os.path.abspath(args.state)
    os.makedirs(state, exist_ok=True)
    os.chmod(state, 0o755)
    check_world_traversable(state)
    t0 = time.monotonic()
    pki, stacks = build_stacks(state, args.legacy_addr, args.new_addr, args.port_offset,
                               args.trusted or list(DEFAULT_TRUSTED))
    start_stacks(*stacks)
    elapsed = time.monotonic() - t0
    desc = write_description(os.path.join(state, DESCRIPTION_FILE), stacks, {
        "state_dir": state,
        "ca_file": pki.ca_file,
        "started_in_seconds": round(elapsed, 2),
        "users": stacks[0].users,
        "master_user": stacks[0].describe()["master_user"],
    })
    json.dump(desc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    print(f"stacks up in {elapsed:.2f}s; stop them with: {sys.executable} -m tests.harness down "
          f"--state {state}", file=sys.stderr)


def load_stacks(state):
    path = os.path.join(os.path.abspath(state), DESCRIPTION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            desc = json.load(f)
    except FileNotFoundError:
        raise BackendError(f"{path} does not exist: no stacks were started with this --state") from None
    return desc, [MailStack.from_description(d) for d in desc["stacks"].values()]


def cmd_down(args):
    _, stacks = load_stacks(args.state)
    running = {s.name: s.pids() for s in stacks}
    t0 = time.monotonic()
    stop_stacks(*stacks)
    for name, pids in running.items():
        shown = ", ".join(f"{d} pid {p}" for d, p in pids.items() if p) or "nothing was running"
        print(f"{name}: stopped {shown}", file=sys.stderr)
    print(f"stopped in {time.monotonic() - t0:.2f}s", file=sys.stderr)
    if args.purge:
        shutil.rmtree(os.path.abspath(args.state))
        print(f"removed {os.path.abspath(args.state)}", file=sys.stderr)


def cmd_show(args):
    desc, stacks = load_stacks(args.state)
    for stack in stacks:
        desc["stacks"][stack.name]["pids"] = stack.pids()  # as of now, not as of "up"
    json.dump(desc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tests.harness",
                                     description="Real Dovecot + Postfix backends on loopback.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the legacy and new stacks, print their JSON description")
    up.add_argument("--state", required=True, help="state directory (short path, 0755 parents)")
    up.add_argument("--legacy-addr", default="127.0.0.2")
    up.add_argument("--new-addr", default="127.0.0.3")
    up.add_argument("--port-offset", type=int, default=0, help="added to every port")
    up.add_argument("--trusted", action="append", metavar="CIDR",
                    help="the proxy's source address (repeatable; default 127.0.0.1/32)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the stacks recorded in --state")
    down.add_argument("--state", required=True)
    down.add_argument("--purge", action="store_true", help="then delete the state directory")
    down.set_defaults(func=cmd_down)
    show = sub.add_parser("show", help="print the recorded description with current pids")
    show.add_argument("--state", required=True)
    show.set_defaults(func=cmd_show)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
