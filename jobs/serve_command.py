"""`robofleet serve SPEC`: serve a run spec's policy (or its best_of_n planner) over the openpi WebSocket and `POST /act`.

Examples:
    robofleet serve examples/libero_object_cosmos.toml                       # ws://127.0.0.1:8000 and /act
    robofleet serve SPEC.toml --port 8777 --api-key-env POLICY_API_KEY       # requests need the key
    robofleet serve SPEC.toml --host 0.0.0.0 --api-key-env POLICY_API_KEY    # reachable from other machines
    robofleet serve aloha_planning.toml --port 8777                          # ALOHA: [env] family = "aloha" only

Clients: `openpi_client.websocket_client_policy.WebsocketClientPolicy(host, port)`, cosmos-policy's
`get_action_from_server(obs, "http://HOST:PORT/act")`, or a robofleet spec with
`[policy] name = "remote"`. The spec's [serving] table sets where the policy runs (replicas = 0: in
this process, the lowest latency; N: N PolicyReplica actors), batching and determinism; its [planner]
may be best_of_n (scorer "model"). A spec for a family robofleet only serves (ALOHA) has an [env]
table with `family` alone (platform/serve_spec.py).
"""
from __future__ import annotations

import argparse
import os

from robofleet.platform.errors import SpecError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `serve` subcommand, added to the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="serve a spec's policy over the openpi WebSocket and POST /act protocols")
    p.add_argument("spec", help="run spec (TOML) whose [policy], [planner] and [serving] are served (env.family picks the keys)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000, openpi's; 0: a free one)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="require `Authorization: Api-Key <key>` on every request, the key read from variable VAR")
    p.add_argument("--max-message-mb", type=float, default=16.0, metavar="MB",
                   help="largest request accepted (default 16)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or HOST:PORT); default: a local in-process cluster")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate everything (spec, port, key) before Ray starts, then serve until interrupted."""
    from robofleet.platform.serve import ServeOptions, check_servable, serve
    from robofleet.platform.serve_spec import load_serve_spec

    if not 0 <= args.port <= 65535:
        raise SpecError("--port", f"{args.port}: give 0..65535")
    if not 0 < args.max_message_mb <= 4096:
        raise SpecError("--max-message-mb", f"{args.max_message_mb}: give a number in (0, 4096]")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SpecError("--api-key-env", f"environment variable {args.api_key_env} is not set or empty")
    spec = load_serve_spec(args.spec)
    check_servable(spec)
    options = ServeOptions(host=args.host, port=args.port, api_key=api_key,
                           max_message_bytes=int(args.max_message_mb * 2**20))

    def ready(server) -> None:
        key = " (API key required)" if api_key else ""
        planner = f" with planner {spec.planner.name!r}" if spec.planner.name != "direct" else ""
        print(f"serving {spec.policy.name!r}{planner} ({spec.env.family}) on {server.ws_url} (openpi) and "
              f"{server.act_url} (http_act){key}", flush=True)

    serve(spec, options, address=args.address, on_ready=ready)
    return 0
