"""`iglubuild farm up|status|down`: the distcc farm as a Docker swarm service."""

from __future__ import annotations

import argparse
import json

from iglubuild.errors import UsageError
from iglubuild.settings import Settings
from iglubuild.settings import add_arguments as add_global_arguments

# iglubuild.farm's defaults (a test keeps them equal): spelled out here so that
# building the parser, which every command does, does not load the farm.
DEFAULT_SWARM_PORT = 2377
DEFAULT_BASE_PORT = 3632

NAME = "farm"
HELP = "the distcc farm as a Docker swarm service: up, status, down"


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65533:
        raise argparse.ArgumentTypeError("expected a port number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Global options may also follow the action (`farm up --build-dir X`).
    common = argparse.ArgumentParser(add_help=False)
    add_global_arguments(common)
    sub = parser.add_subparsers(dest="farm_action", metavar="ACTION",
                                parser_class=type(parser))
    up = sub.add_parser("up", help="start (or resize) the farm", parents=[common])
    up.add_argument("--replicas", type=int, metavar="N",
                    help="number of distccd volunteers (on a manager)")
    up.add_argument("--join", metavar="ADDR:PORT",
                    help="join this machine to the swarm of that manager as a worker")
    up.add_argument("--token", metavar="TOKEN", help="the swarm's worker join token")
    up.add_argument("--allow", action="append", default=[], metavar="CIDR",
                    help="also accept compiles from this network (repeatable); "
                         "the swarm's nodes are always accepted")
    up.add_argument("--image", metavar="REF",
                    help="toolchain image (default: the newest `toolchain image`)")
    up.add_argument("--advertise-addr", default="127.0.0.1", metavar="ADDR",
                    help="address a new swarm is advertised on (default 127.0.0.1: one machine)")
    up.add_argument("--swarm-port", type=_port, default=DEFAULT_SWARM_PORT, metavar="PORT",
                    help="swarm management port of a new swarm")
    up.add_argument("--base-port", type=_port, default=DEFAULT_BASE_PORT, metavar="PORT",
                    help="distccd port of slot 1; slot N uses PORT+2(N-1), stats one above")
    up.add_argument("--listen", metavar="ADDR",
                    help="address distccd listens on (default: each volunteer's own "
                         "node's swarm address)")
    up.add_argument("--slots", type=int, metavar="N",
                    help="parallel compiles per volunteer (default: CPUs of this machine)")
    up.add_argument("--cpuset", metavar="CPUS",
                    help="pin each volunteer's distccd to these CPUs (taskset list)")
    sub.add_parser("status", help="list the volunteers", parents=[common]).add_argument(
        "--json", action="store_true", help="machine-readable output")
    sub.add_parser("down", help="remove the farm (and the swarm if iglubuild made it)",
                   parents=[common])


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild import docker_engine, farm

    action = getattr(args, "farm_action", None)
    if action == "up":
        cfg = farm.FarmConfig(
            replicas=args.replicas, image=args.image, allow=tuple(args.allow),
            advertise_addr=args.advertise_addr, swarm_port=args.swarm_port,
            base_port=args.base_port, listen=args.listen, slots=args.slots,
            cpuset=args.cpuset, join=args.join, token=args.token,
        )
        if args.join:
            if args.replicas is not None:
                raise UsageError("--replicas is set on the manager, not when joining",
                                 hint="run `farm up --replicas N` on the manager")
            node = farm.farm_join(settings, cfg)
            print(f"joined the swarm at {args.join} as node {node}")
            return 0
        if args.replicas is None:
            raise UsageError("farm up needs --replicas N",
                             hint="or --join ADDR:PORT --token TOKEN on a worker")
        volunteers = farm.farm_up(settings, cfg)
        print(f"{farm.SERVICE_NAME}: {len(volunteers)} volunteer(s)")
        for v in volunteers:
            print(f"  {v.address}:{v.port}  node {v.node}  slot {v.slot}")
        print("other machines join with: " + farm.join_command(docker_engine.docker_client()))
        return 0
    if action == "status":
        status = farm.farm_status(settings)
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        if status["service"] is None:
            print(f"no farm (swarm: {status['swarm']}); `iglubuild farm up --replicas N`")
            return 0
        print(f"{status['service']}: image {status['image']}")
        print(f"local compiler {status['local_identity']} ({status['local_compiler']})")
        for n in status["nodes"]:
            print(f"  node {n['hostname']:<20} {n['address']:<15} {n['role']:<8} {n['state']}"
                  f"  ({n['id'][:12]})")
        for v in status["volunteers"]:
            ident = v["identity"] or "-"
            mark = "" if v["identity"] in (None, status["local_identity"]) else "  MISMATCH"
            jobs = "-" if v["jobs_served"] is None else v["jobs_served"]
            line = (f"  slot {v['slot']:<3} {v['node']:<20} {v['address']}:{v['port']:<6}"
                    f" {v['state']:<9} compiler {ident}{mark}  jobs {jobs}")
            if v["problem"]:
                line += f"  ({v['problem']})"
            print(line)
        return 0
    if action == "down":
        result = farm.farm_down(settings)
        print("removed " + farm.SERVICE_NAME if result["service_removed"] else "no farm running")
        if result["left_swarm"]:
            print("left the swarm iglubuild had created")
        return 0
    raise UsageError("farm needs an action", hint="iglubuild farm up|status|down")
