#!/usr/bin/env python3
"""Keyway example client (redis-py): one endpoint, password from a file.

Configuration, from the environment (the first that is set wins):
  REDIS_URL            redis://:PASSWORD@10.0.0.10:6379/0 (password inside the
                       URL: fine for a Kubernetes Secret, avoid in shell history)
  REDIS_HOST, REDIS_PORT (default 10.0.0.10, 6379), REDIS_DB (default 0) and
  REDIS_PASSWORD_FILE  a file holding the password (Docker / Kubernetes secret)
  REDIS_USERNAME       optional ACL user

Never point it at a Redis node (redis-01/02/03): the endpoint is the load
balancer, Keyway sends every connection to the current master.

  python3 app.py               PING, SET/GET/DEL of a unique key, INCR; prints OK
  python3 app.py --writes 300  also 300 INCRs, one every 50 ms, counting errors
                               (run it during a failover to see the retries work)
"""

import argparse
import os
import sys
import time
import uuid

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

# Ride through a failover: Keyway holds new connections while there is no
# master (its timeouts.hold, 10 s in production) and closes the connections
# to the old master when the route moves. So: a socket timeout above the hold
# time, and a few retries with backoff on connection errors (about 12 s in all).
RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15)
OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 12,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "retry": RETRY,
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    "decode_responses": True,
}


def client() -> redis.Redis:
    url = os.environ.get("REDIS_URL")
    if url:
        return redis.Redis.from_url(url, **OPTIONS)
    password = None
    password_file = os.environ.get("REDIS_PASSWORD_FILE")
    if password_file:
        with open(password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    return redis.Redis(
        host=os.environ.get("REDIS_HOST", "10.0.0.10"),
        port=int(os.environ.get("REDIS_PORT", "6379")),
        db=int(os.environ.get("REDIS_DB", "0")),
        username=os.environ.get("REDIS_USERNAME") or None,
        password=password,
        **OPTIONS,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--writes", type=int, default=0, help="INCRs to send after the checks")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two INCRs")
    args = parser.parse_args()

    r = client()
    assert r.ping() is True, "PING"
    key = f"keyway:example:python:{uuid.uuid4()}"
    assert r.set(key, "hello", ex=60) is True, "SET"
    assert r.get(key) == "hello", "GET"
    assert r.delete(key) == 1, "DEL"
    counter = f"{key}:counter"
    assert r.incr(counter) == 1, "INCR"
    role = r.info("replication")["role"]
    assert role == "master", f"INFO replication says role:{role}"
    port = r.info("server")["tcp_port"]
    print(f"python example: PING, SET/GET/DEL, INCR ok; role:{role}, master tcp_port={port}")

    errors = 0
    for _ in range(args.writes):
        try:
            r.incr(counter)
        except redis.RedisError as e:  # after every retry: the application sees it
            errors += 1
            print(f"python example: write failed: {e}", file=sys.stderr)
        time.sleep(args.interval)
    if args.writes:
        value = int(r.get(counter))
        port = r.info("server")["tcp_port"]
        print(
            f"python example: {args.writes} writes, {errors} failed, counter={value}, "
            f"master tcp_port={port}"
        )
    r.delete(counter)
    print("OK" if errors == 0 else "FAIL")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
