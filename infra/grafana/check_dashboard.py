#!/usr/bin/env python3
"""Checks infra/grafana/msgr.json against a real Prometheus scraping a real stack.

Starts nats-server, a worker and an edge on spare loopback ports, Debian's
prometheus scraping both every second (with infra/prometheus/alerts.yml
loaded, so the rules must parse too), runs msgr-smoke (a bounded load over
every API path) and then asks Prometheus each panel's query. A query that is
invalid, or that returns no series, fails the check: a panel on the dashboard
must show something for a system under load.

Usage: check_dashboard.py --bin-dir target/debug [--secs 20]
"""

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, what, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"check_dashboard: {what} did not answer at {url} within {secs} s")


def panels(dashboard):
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard):
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target.get("expr", "")


def empty_panels(dashboard):
    """Panels that would show nothing whatever the data: no query at all."""
    return [p.get("title", "?") for p in panels(dashboard)
            if p.get("type") != "row" and not any(t.get("expr") for t in p.get("targets", []))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "debug"))
    ap.add_argument("--secs", type=int, default=20)
    args = ap.parse_args()
    bins = pathlib.Path(args.bin_dir)
    for tool in ("nats-server", "prometheus"):
        if not shutil.which(tool):
            sys.exit(f"check_dashboard: {tool} not found (just tools / just prometheus)")
    dashboard = json.loads((ROOT / "infra" / "grafana" / "msgr.json").read_text())

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="msgr-dashboard-"))
    procs = []
    logs = {}

    def start(name, cmd, env=None):
        log = open(tmp / f"{name}.log", "w")
        logs[name] = tmp / f"{name}.log"
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **(env or {})}))

    ok = False
    try:
        nats, nats_mon = free_port(), free_port()
        start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(nats), "-m", str(nats_mon),
                       "-js", "-sd", str(tmp / "nats")])
        wait_http(f"http://127.0.0.1:{nats_mon}/healthz?js-enabled-only=true", "nats-server")
        worker_metrics, edge = free_port(), free_port()
        common = {"MSGR_NATS__URL": f"nats://127.0.0.1:{nats}", "MSGR_DATA_DIR": str(tmp),
                  "RUST_LOG": "warn", "MSGR_PASSWORD_MEMORY_KIB": "1024",
                  "MSGR_PASSWORD_ITERATIONS": "1"}
        start("worker", [str(bins / "msgr-worker"), "all"],
              {**common, "MSGR_METRICS_LISTEN": f"127.0.0.1:{worker_metrics}"})
        start("edge", [str(bins / "msgr-edge")], {**common, "MSGR_LISTEN": f"127.0.0.1:{edge}"})
        wait_http(f"http://127.0.0.1:{edge}/healthz", "the edge", 120)

        prom = free_port()
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{ROOT / 'infra' / 'prometheus' / 'alerts.yml'}']\n"
            "scrape_configs:\n"
            f"  - job_name: msgr-edge\n    static_configs: [{{targets: ['127.0.0.1:{edge}']}}]\n"
            f"  - job_name: msgr-worker\n    static_configs: [{{targets: ['127.0.0.1:{worker_metrics}']}}]\n")
        start("prometheus", ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'prom'}",
                             f"--web.listen-address=127.0.0.1:{prom}"])
        wait_http(f"http://127.0.0.1:{prom}/-/ready", "prometheus")

        smoke = subprocess.run([str(bins / "msgr-smoke"), "--url", f"http://127.0.0.1:{edge}",
                                "--secs", str(args.secs)], capture_output=True, text=True)
        print(smoke.stdout.strip())
        if smoke.returncode != 0:
            sys.exit(f"check_dashboard: msgr-smoke failed:\n{smoke.stderr}")
        time.sleep(4)  # a few more scrapes

        # Both targets up, and every rule loaded.
        failures = [f"{t}: a panel without a query" for t in empty_panels(dashboard)]
        n = 0
        for title, expr in queries(dashboard):
            n += 1
            q = expr.replace("$__rate_interval", "30s")
            url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = json.load(r)
            except urllib.error.HTTPError as e:
                failures.append(f"{title}: invalid query {q!r}: {e.read().decode()[:200]}")
                continue
            if body.get("status") != "success":
                failures.append(f"{title}: {q!r}: {body}")
            elif not body["data"]["result"]:
                failures.append(f"{title}: no series for {q!r}")
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules", timeout=10) as r:
            rules = [rule["name"] for g in json.load(r)["data"]["groups"] for rule in g["rules"]]
        if len(rules) < 9:
            failures.append(f"prometheus loaded {len(rules)} alert rules: {rules}")
        if failures:
            print(f"check_dashboard: {len(failures)} of {n} panel queries failed:")
            for f in failures:
                print("  -", f)
            sys.exit(1)
        print(f"check_dashboard: every one of the {n} panel queries returned series; "
              f"{len(rules)} alert rules loaded")
        ok = True
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"check_dashboard: logs kept in {tmp}")


if __name__ == "__main__":
    main()
