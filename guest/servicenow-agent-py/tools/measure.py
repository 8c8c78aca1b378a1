#!/usr/bin/env python3
"""Per-invocation cost of the ServiceNow agent(s) on a running `delegate demo`.

Usage: measure.py --url http://127.0.0.1:18080 --token TOKEN_A --log demo.err --label rust [-n 50]
                  [--admin http://127.0.0.1:19901 --admin-token-file /tmp/delegate-demo/admin-token]

Sends Jane's request N times (after 3 warm-up calls), one at a time, reads each answer to its
last byte, and prints the p50/p95 wall time seen by the client and, from the host's
`invocation finished` log lines (DELEGATE_LOG=info), the guest CPU (`cpu_us`) and the host's
`elapsed_ms` of the same invocations; with --admin, the mean `instantiate` phase from the
host's /metrics around the run. Standard library only.
"""

import argparse
import re
import statistics
import time
import urllib.request


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--admin")
    ap.add_argument("--admin-token-file")
    a = ap.parse_args()
    body = b'{"prompt":"Show me 5 incidents assigned to me"}'

    def once():
        req = urllib.request.Request(
            a.url + "/invocations", data=body, headers={"Authorization": "Bearer " + a.token}
        )
        t = time.perf_counter()
        with urllib.request.urlopen(req) as r:
            text = r.read().decode()
        dt = time.perf_counter() - t
        assert "INC0012345" in text and "success" in text, text[-400:]
        return dt

    def phases():
        if not a.admin:
            return {}
        with open(a.admin_token_file) as f:
            tok = f.read().strip()
        req = urllib.request.Request(a.admin + "/metrics", headers={"Authorization": "Bearer " + tok})
        with urllib.request.urlopen(req) as r:
            text = r.read().decode()
        out = {}
        for m in re.finditer(r'delegate_phase_duration_seconds_(sum|count)\{phase="(\w+)"\} ([0-9.e+-]+)', text):
            out[(m.group(2), m.group(1))] = float(m.group(3))
        return out

    for _ in range(3):
        once()
    before = phases()
    with open(a.log, "rb") as f:
        f.seek(0, 2)
        start = f.tell()
    walls = [once() for _ in range(a.n)]
    time.sleep(0.2)
    after = phases()
    inst = ""
    if after:
        d = lambda k: after.get(k, 0) - before.get(k, 0)
        n = d(("instantiate", "count")) or 1
        inst = f"; instantiate mean {d(('instantiate', 'sum')) / n * 1e6:.0f} us"
    with open(a.log, "rb") as f:
        f.seek(start)
        log = re.sub(rb"\x1b\[[0-9;]*m", b"", f.read()).decode("utf-8", "replace")
    lines = [l for l in log.splitlines() if "invocation finished" in l]
    cpu = [int(m.group(1)) for l in lines if (m := re.search(r"cpu_us=(\d+)", l))]
    el = [int(m.group(1)) for l in lines if (m := re.search(r"elapsed_ms=(\d+)", l))]
    ms = [w * 1000 for w in walls]
    print(
        f"{a.label}: n={a.n} client wall p50 {quantile(ms, .5):.2f} ms p95 {quantile(ms, .95):.2f} ms"
        f" mean {statistics.mean(ms):.2f} ms; guest cpu p50 {quantile(cpu, .5) / 1000:.2f} ms"
        f" p95 {quantile(cpu, .95) / 1000:.2f} ms (n={len(cpu)}); host elapsed p50 {quantile(el, .5)} ms{inst}"
    )


if __name__ == "__main__":
    main()
