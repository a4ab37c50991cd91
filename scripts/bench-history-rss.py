#!/usr/bin/env python3
"""What the elector's history costs in memory: its RSS after NAMES locks
(10,000) each change hands 2 x CYCLES times (32), with --history 0 and with
--history 32 --history-names HISTORY_NAMES (the default, 1,000), in the
same run. Memory store, a fresh state file each.

    scripts/bench-history-rss.py target/debug/elector
    HISTORY_NAMES=10000 scripts/bench-history-rss.py target/debug/elector
"""
import http.client, json, os, subprocess, sys, time, threading

ELECTOR = sys.argv[1]
NAMES = int(os.environ.get("NAMES", "10000"))
CYCLES = int(os.environ.get("CYCLES", "16"))  # each cycle: acquire + release = 2 changes

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def run(history):
    import tempfile
    state = os.path.join(tempfile.mkdtemp(), "elector.json")
    p = subprocess.Popen([ELECTOR, "--store", "memory", "--listen", "127.0.0.1:0", "--history", str(history),
                          "--history-names", os.environ.get("HISTORY_NAMES", "1000"),
                          "--state-file", state],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    host, port = line.strip().rsplit("//", 1)[1].split(":")
    base = rss_kib(p.pid)
    def worker(part, parts):
        c = http.client.HTTPConnection(host, int(port))
        for cycle in range(CYCLES):
            for i in range(part, NAMES, parts):
                name = f"shard-{i:05d}"
                body = json.dumps({"holder": f"h{cycle % 2}", "ttl_ms": 60000})
                c.request("PUT", f"/v1/locks/{name}", body, {"content-type": "application/json"})
                r = c.getresponse(); data = r.read()
                tok = json.loads(data)["token"]
                c.request("DELETE", f"/v1/locks/{name}", json.dumps({"holder": f"h{cycle % 2}", "token": tok}),
                          {"content-type": "application/json"})
                r = c.getresponse(); r.read()
    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(k, 4)) for k in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    took = time.time() - t0
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", "/metrics"); m = c.getresponse().read().decode()
    names = [l for l in m.splitlines() if l.startswith("mpsync_history_names")]
    after = rss_kib(p.pid)
    p.terminate(); p.wait()
    return base, after, took, names

for h in (0, 32):
    base, after, took, names = run(h)
    print(f"--history {h:2}: RSS {base/1024:.1f} MiB at start, {after/1024:.1f} MiB after {NAMES}x{CYCLES*2} changes "
          f"(+{(after-base)/1024:.1f} MiB), {NAMES*CYCLES*2/took:.0f} requests/s; {names}", flush=True)
