#!/usr/bin/env python3
"""A fake `hcloud` CLI for scripts/ci/hcloud_fake_test.sh. No network at all.

Every call is appended to $FAKE_HCLOUD_LOG (the arguments joined by spaces, one
call a line). `describe` answers from $FAKE_HCLOUD_STATE, a JSON file shaped like
the Hetzner API: {"load_balancer": {...}, "servers": {"proxy-01": {...}}}, and
the commands that change the balancer update that file, so a second run of the
script sees what the first one did. Only the subcommands and flags that
deploy/hcloud/configure_lb_redis.sh uses are known; anything else fails (exit 2)
so that a new, unexpected call breaks the test.
"""

import json
import os
import sys


def fail(message, code=1):
    print(f"hcloud: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags(args):
    """--name value, --name=value and boolean --name (value "true")."""
    flags, positional, i = {}, [], 0
    booleans = {"--proxy-protocol", "--use-private-ip", "--health-check-http-tls"}
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
            elif arg in booleans:
                name, value = arg, "true"
            else:
                if i + 1 >= len(args):
                    fail(f"flag needs an argument: {arg}", 2)
                name, value = arg, args[i + 1]
                i += 1
            flags[name] = value
        elif arg == "-o":
            flags["-o"] = args[i + 1]
            i += 1
        else:
            positional.append(arg)
        i += 1
    return flags, positional


def seconds(duration):
    if duration.endswith("ms"):
        return int(duration[:-2]) // 1000
    if duration.endswith("s"):
        return int(duration[:-1])
    if duration.endswith("m"):
        return int(duration[:-1]) * 60
    fail(f"invalid duration {duration}", 2)


def main():
    args = sys.argv[1:]
    with open(os.environ["FAKE_HCLOUD_LOG"], "a", encoding="utf-8") as log:
        log.write(" ".join(args) + "\n")
    state_path = os.environ["FAKE_HCLOUD_STATE"]
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)

    if args[:2] == ["context", "active"]:
        print(state.get("active_context", ""))
        return
    if not os.environ.get("HCLOUD_TOKEN") and not state.get("active_context"):
        fail("no active context or token (see `hcloud context --help`)")

    if len(args) < 2:
        fail(f"unknown command: {' '.join(args)}", 2)
    resource, verb = args[0], args[1]
    flags, positional = parse_flags(args[2:])
    lb = state["load_balancer"]

    if resource == "server" and verb == "describe":
        server = state["servers"].get(positional[0])
        if server is None:
            fail(f"Server not found: {positional[0]}")
        print(json.dumps(server))
        return
    if resource != "load-balancer":
        fail(f"unknown command: {' '.join(args)}", 2)
    if not positional or positional[0] not in (lb["name"], str(lb["id"])):
        fail(f"Load Balancer not found: {positional[0] if positional else ''}")

    if verb == "describe":
        if flags.get("-o") != "json":
            fail("the fake only answers describe -o json", 2)
        print(json.dumps(lb))
        return
    if verb == "add-service":
        port = int(flags["--listen-port"])
        if any(s["listen_port"] == port for s in lb["services"]):
            fail(f"listen_port {port} already in use (uniqueness_error)")
        lb["services"].append(
            {
                "protocol": flags["--protocol"],
                "listen_port": port,
                "destination_port": int(flags["--destination-port"]),
                "proxyprotocol": flags.get("--proxy-protocol", "false") == "true",
                # The API's default for a new tcp service.
                "health_check": {
                    "protocol": "tcp",
                    "port": int(flags["--destination-port"]),
                    "interval": 15,
                    "timeout": 10,
                    "retries": 3,
                    "http": None,
                },
                "http": None,
            }
        )
    elif verb == "update-service":
        port = int(flags["--listen-port"])
        matches = [s for s in lb["services"] if s["listen_port"] == port]
        if not matches:
            fail(f"service with listen port {port} not found")
        service, check = matches[0], matches[0]["health_check"]
        for flag, value in flags.items():
            if flag == "--listen-port":
                continue
            if flag == "--destination-port":
                service["destination_port"] = int(value)
            elif flag == "--proxy-protocol":
                service["proxyprotocol"] = value == "true"
            elif flag == "--health-check-protocol":
                check["protocol"] = value
                if value == "http" and not check.get("http"):
                    check["http"] = {
                        "domain": "",
                        "path": "/",
                        "response": "",
                        "status_codes": ["2??", "3??"],
                        "tls": False,
                    }
            elif flag == "--health-check-port":
                check["port"] = int(value)
            elif flag == "--health-check-interval":
                check["interval"] = seconds(value)
            elif flag == "--health-check-timeout":
                check["timeout"] = seconds(value)
            elif flag == "--health-check-retries":
                check["retries"] = int(value)
            elif flag == "--health-check-http-path":
                check["http"]["path"] = value
            elif flag == "--health-check-http-status-codes":
                check["http"]["status_codes"] = value.split(",")
            else:
                fail(f"unknown flag: {flag}", 2)
    elif verb == "add-target":
        server = state["servers"].get(flags.get("--server", ""))
        if server is None:
            fail(f"server not found: {flags.get('--server')}")
        if any(t.get("server", {}).get("id") == server["id"] for t in lb["targets"]):
            fail("target already exists (target_already_defined)")
        lb["targets"].append(
            {
                "type": "server",
                "server": {"id": server["id"]},
                "use_private_ip": flags.get("--use-private-ip") == "true",
                "health_status": [],
            }
        )
    elif verb == "attach-to-network":
        lb["private_net"].append(
            {"network": 1, "ip": flags.get("--ip", "10.0.0.2")}
        )
    else:
        fail(f"unknown command: {' '.join(args)}", 2)

    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
    print(f"done: {verb}")


if __name__ == "__main__":
    main()
