#!/usr/bin/env python3
"""`just status`: one screen that says whether a running msgr is healthy.

Reads only the live system: each nats-server's monitoring endpoint (/varz,
/jsz), each worker's and edge's /healthz and /metrics. Shapes:

    status.py            the `just up` stack (nats :8222, worker :9464, edge :8080)
    status.py cluster    `just cluster` (nats :8231-8233, workers :9465-9466,
                         edges :8081-8082, HAProxy :8090); --base shifts the ports
    status.py --nats HOST:PORT,... --workers ... --edges ...   anything else

Exits 0 when everything is healthy, 1 otherwise (with the reasons).
"""

import argparse
import json
import re
import sys
import urllib.error
import urllib.request


def get(url, timeout=2.0):
    """(status, body text) or (None, error)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def metrics(text):
    """Prometheus text → [(name, {labels}, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            pass
    return out


def first(ms, name, **want):
    for n, labels, v in ms:
        if n == name and all(labels.get(k) == w for k, w in want.items()):
            return labels, v
    return None, None


def probe(addr, role):
    """A worker's or edge's /healthz and /metrics: None when it is down, else
    (name, version, healthy, problems it reports, parsed metrics)."""
    s, body = get(f"http://{addr}/healthz")
    ms_status, mbody = get(f"http://{addr}/metrics")
    if s is None or ms_status != 200:
        return None
    ms = metrics(mbody)
    info, _ = first(ms, "msgr_build_info", role=role)
    info = info or {}
    reported = [] if s == 200 else json.loads(body).get("problems", [])
    return info.get("id", addr), info.get("version", "?"), s == 200, reported, ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", nargs="?", default="up", choices=["up", "cluster"])
    ap.add_argument("--base", type=int, default=0, help="added to every port")
    ap.add_argument("--nats", help="nats-server monitoring endpoints, comma-separated")
    ap.add_argument("--workers", help="worker metrics endpoints, comma-separated")
    ap.add_argument("--edges", help="edge endpoints, comma-separated")
    args = ap.parse_args()
    p = lambda port: f"127.0.0.1:{port + args.base}"
    if args.shape == "cluster":
        nats = [p(8231), p(8232), p(8233)]
        workers = [p(9465), p(9466)]
        edges = [p(8081), p(8082)]
    else:
        nats, workers, edges = [p(8222)], [p(9464)], [p(8080)]
    nats = args.nats.split(",") if args.nats else nats
    workers = args.workers.split(",") if args.workers else workers
    edges = args.edges.split(",") if args.edges else edges
    problems = []

    print("NATS")
    streams = {}
    consumers = {}
    nats_up = 0
    for addr in nats:
        s, body = get(f"http://{addr}/varz")
        if s != 200:
            print(f"  {addr:<22} DOWN ({body[:60]})")
            problems.append(f"nats-server {addr} is down")
            continue
        v = json.loads(body)
        nats_up += 1
        js = "JetStream on" if v.get("jetstream", {}).get("config") else "JetStream OFF"
        print(f"  {addr:<22} {v.get('server_name', '?'):<10} v{v.get('version', '?'):<8} "
              f"up {v.get('uptime', '?'):<10} {v.get('connections', 0):>4} clients  {js}")
        s, body = get(f"http://{addr}/jsz?streams=true&consumers=true")
        if s == 200:
            for acct in json.loads(body).get("account_details") or []:
                for st in acct.get("stream_detail") or []:
                    name = st["name"]
                    cluster = st.get("cluster") or {}
                    leader = cluster.get("leader")
                    # In a cluster every node reports its replica; keep the leader's view.
                    if name not in streams or leader == v.get("server_name"):
                        streams[name] = (st, leader)
                    for c in st.get("consumer_detail") or []:
                        consumers[(name, c["name"])] = c
    if nats_up == 0:
        problems.append("no nats-server answers")
    elif nats_up < len(nats):
        print(f"  {nats_up} of {len(nats)} nodes answer: a cluster keeps going with a majority")

    print("STREAMS")
    for name, (st, leader) in sorted(streams.items()):
        cfg = st.get("config") or {}
        state = st.get("state") or {}
        replicas = cfg.get("num_replicas", 1)
        print(f"  {name:<16} R{replicas}  leader {leader or '-':<10} "
              f"{state.get('messages', 0):>8} messages  {state.get('consumer_count', 0):>3} consumers")
        if leader is None and replicas > 1:
            problems.append(f"stream {name} has no leader")
    for needed in ("MSGR_IN", "MSGR_MEDIA", "KV_MSGR_LEASES"):
        if nats_up and needed not in streams:
            problems.append(f"stream {needed} is missing (a worker re-creates it within 10 s)")

    # Workers: health, version, partitions held.
    print("WORKERS")
    holder = {}
    partitions = None
    worker_up = 0
    store_problems = []
    for addr in workers:
        seen = probe(addr, "worker")
        if seen is None:
            print(f"  {addr:<22} DOWN")
            problems.append(f"worker {addr} is down")
            continue
        worker_up += 1
        name, version, healthy, reported, ms = seen
        held = sorted(int(l["partition"]) for n, l, v in ms
                      if n == "msgr_worker_partition_held" and v == 1)
        for part in held:
            holder.setdefault(part, []).append(name)
        _, total = first(ms, "msgr_worker_partitions")
        if total:
            partitions = int(total)
        state = "healthy" if healthy else "UNHEALTHY"
        print(f"  {addr:<22} {name:<24} v{version:<8} {state:<10} "
              f"holds {len(held):>3} partitions")
        for prob in reported:
            print(f"      - {prob}")
            problems.append(f"worker {name}: {prob}")
            if prob.startswith("store"):
                store_problems.append(prob)
    if worker_up == 0:
        problems.append("no worker answers: nothing is sequenced or stored")

    print("PARTITIONS (holder, commands waiting)")
    lag = {}
    for (stream, cname), c in consumers.items():
        m = re.match(r"^SEQ_(\d+)(_\d+)?$", cname)
        if stream == "MSGR_IN" and m:
            part = int(m.group(1))
            lag[part] = max(lag.get(part, 0), c.get("num_pending", 0) + c.get("num_ack_pending", 0))
    count = partitions if partitions is not None else (max(lag) + 1 if lag else 0)
    row = []
    for part in range(count):
        who = holder.get(part)
        if not who:
            problems.append(f"partition {part} has no holder")
        elif len(who) > 1:
            problems.append(f"partition {part} has {len(who)} holders: {who}")
        row.append(f"{part:>3} {','.join(who) if who else 'NONE':<14} {lag.get(part, 0):>6}")
    for i in range(0, len(row), 3):
        print("  " + "   ".join(row[i:i + 3]))

    print("EDGES")
    edge_up = 0
    for addr in edges:
        seen = probe(addr, "edge")
        if seen is None:
            print(f"  {addr:<22} DOWN")
            problems.append(f"edge {addr} is down")
            continue
        edge_up += 1
        name, version, healthy, reported, ms = seen
        _, conns = first(ms, "msgr_edge_connections")
        _, cap = first(ms, "msgr_edge_max_connections")
        state = "healthy" if healthy else "UNHEALTHY"
        print(f"  {addr:<22} {name:<24} v{version:<8} "
              f"{state:<10} {int(conns or 0):>6} / {int(cap or 0)} connections")
        for prob in reported:
            print(f"      - {prob}")
            problems.append(f"edge {addr}: {prob}")
    if edge_up == 0:
        problems.append("no edge answers: clients cannot connect")

    print("STORE")
    if store_problems:
        print("  UNHEALTHY: " + "; ".join(store_problems))
    elif worker_up:
        print("  healthy (no worker reports store writes failing)")
    else:
        print("  unknown (no worker answers)")

    if problems:
        print(f"\nDEGRADED: {len(problems)} problem(s)")
        for prob in problems:
            print(f"  - {prob}")
        sys.exit(1)
    print("\nHEALTHY")


if __name__ == "__main__":
    main()
