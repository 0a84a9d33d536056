"""What the loopback cloud stand-ins (tools/ec2_server.py, runpod_server.py, lambda_server.py,
vastai_server.py) share: machines, faults, the request log and the control API of the tests.

Machines are network namespaces running sshd, made by a child process running
tests/lib/cloud_hosts.lua under skyrun (--hosts-cmd): each launched instance gets one, with the
public key the client registered; the instance's start script (EC2 user data, a pod's start
command) runs there, and its `shutdown` is watched: an instance that shuts itself down (its ttl)
is terminated as the cloud would. The stand-in serves its API on the machines' gateway address,
so the machines reach it as the clients do.

faults.json (re-read on each request), a list of
  {"id": "x", "action": "RunInstances", "code": "InsufficientInstanceCapacity", "status": 500,
   "message": "...", "times": 1, "match": {"AvailabilityZone": "us-east-1a"}}
      answer `action` (EC2 action, or the provider's operation name) with an error, `times` times
      per id; "match" compares flattened request fields (all must be equal)
  {"id": "y", "no_ssh": 1}               the next `no_ssh` launched machines never answer on SSH
  {"id": "z", "interrupt_when": "/path"} when the file exists, the first running spot instance
      (or the instance whose address the file holds) is reclaimed: killed, state terminated
Control API for tests (no authentication, loopback only):
  GET  /_standin/instances          every instance the stand-in knows, as JSON
  POST /_standin/interrupt?id=ID    reclaim an instance now (a spot interruption)
"""

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hosts:
    """The cloud_hosts.lua child: one namespace per machine."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        first = self.proc.stdout.readline()
        if not first:
            raise SystemExit("cloud_hosts did not start: " + cmd)
        self.gateway = json.loads(first)["gateway"]
        self.lock = threading.Lock()

    def call(self, **cmd):
        with self.lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("cloud_hosts ended")
        r = json.loads(line)
        if not r.get("ok"):
            raise RuntimeError("cloud_hosts: " + str(r.get("error")))
        return r


class Cloud:
    """Instances, the request log and the faults. Subclasses answer their API."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.instances = {}       # id -> dict (state, addr, dir, spot, tags, ...)
        self.order = []
        self.fault_fired = {}
        self.no_ssh_left = {}
        self.hosts = Hosts(args.hosts_cmd)
        self.log_lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True).start()

    # ---- log and faults ------------------------------------------------------------------------

    def log(self, record):
        """One JSON line per request: what came, without the credentials' headers."""
        with self.log_lock, open(self.args.log, "a") as f:
            f.write(json.dumps(record) + "\n")

    def faults(self):
        path = os.path.join(self.args.state_dir, "faults.json")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return []

    def fault_for(self, action, fields):
        """The first unspent fault for this action whose match holds, spending one use; or None."""
        with self.lock:
            for fault in self.faults():
                if fault.get("action") != action:
                    continue
                if any(str(fields.get(k)) != str(v) for k, v in (fault.get("match") or {}).items()):
                    continue
                fid = fault.get("id", action)
                fired = self.fault_fired.get(fid, 0)
                if fired >= fault.get("times", 1):
                    continue
                self.fault_fired[fid] = fired + 1
                return fault
        return None

    def take_no_ssh(self):
        with self.lock:
            for fault in self.faults():
                n = fault.get("no_ssh")
                if n:
                    fid = fault.get("id", "no_ssh")
                    used = self.no_ssh_left.get(fid, 0)
                    if used < n:
                        self.no_ssh_left[fid] = used + 1
                        return True
        return False

    # ---- machines ------------------------------------------------------------------------------

    def launch(self, iid, pubkey, record, user_data=None, env=None, login_as=None, container=False):
        """Makes instance iid a machine. record: the provider's fields (kept in self.instances).
        container: the machine is a container whose start command (user_data) starts its own sshd."""
        ssh = not self.take_no_ssh()
        r = self.hosts.call(op="up", id=iid, pubkey=pubkey, ssh=ssh, user_data=user_data or "",
                            env=env or {}, login_as=login_as or [], preinstall=self.args.preinstalled_skyrun,
                            container=container)
        with self.lock:
            record.update(id=iid, addr=r["addr"], dir=r["dir"], state="running", launched=time.time(), answers_ssh=ssh)
            self.instances[iid] = record
            self.order.append(iid)
        return record

    def end(self, iid, state="terminated", reason=None):
        """The machine is gone (terminated, reclaimed, shut down)."""
        with self.lock:
            inst = self.instances.get(iid)
            if not inst or inst["state"] == state or inst["state"] == "terminated":
                return inst
            inst["state"] = state
            inst["ended"] = time.time()
            if reason:
                inst["reason"] = reason
        self.hosts.call(op="down", id=iid)
        return inst

    def interrupt(self, iid):
        self.end(iid, "terminated", "spot-interruption")

    def _watch(self):
        """Instances that ran `shutdown` end; interrupt_when faults fire."""
        while True:
            time.sleep(0.1)
            try:
                with self.lock:
                    running = [i for i in self.instances.values() if i["state"] == "running"]
                for inst in running:
                    if os.path.exists(os.path.join(inst["dir"], "shutdown")):
                        self.on_shutdown(inst)
                for fault in self.faults():
                    path = fault.get("interrupt_when")
                    fid = fault.get("id", "interrupt")
                    if not path or self.fault_fired.get(fid) or not os.path.exists(path):
                        continue
                    with open(path) as f:
                        want = f.read().strip()
                    with self.lock:
                        cands = [self.instances[i] for i in self.order if self.instances[i]["state"] == "running"
                                 and (self.instances[i].get("spot") or want)]
                    target = next((c for c in cands if c["addr"] == want), None) or (cands[0] if cands else None)
                    if target:
                        self.fault_fired[fid] = 1
                        self.interrupt(target["id"])
            except Exception:
                traceback.print_exc()

    def on_shutdown(self, inst):
        """An instance ran `shutdown`: by default it is terminated."""
        self.end(inst["id"], "terminated", "instance-initiated-shutdown")

    def snapshot(self):
        with self.lock:
            out = []
            for iid in self.order:
                i = dict(self.instances[iid])
                out.append(i)
            return out


class Handler(BaseHTTPRequestHandler):
    """Routes /_standin/ to the control API and the rest to cloud.handle(handler, method, body)."""

    protocol_version = "HTTP/1.1"
    cloud = None

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, ctype="application/json", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method):
        body = self._body()
        try:
            if self.path.startswith("/_standin/"):
                return self._control(method)
            self.cloud.handle(self, method, body)
        except Exception as e:  # a stand-in bug: say it loudly
            traceback.print_exc()
            self.send(500, json.dumps({"error": "stand-in failure: %s" % e}))

    def _control(self, method):
        path, _, query = self.path.partition("?")
        if path == "/_standin/instances":
            return self.send(200, json.dumps(self.cloud.snapshot()))
        if path == "/_standin/interrupt" and method == "POST":
            iid = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("id")
            self.cloud.interrupt(iid)
            return self.send(200, "{}")
        self.send(404, "{}")

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")


def add_common_args(p):
    p.add_argument("--state-dir", required=True, help="faults.json is read from here")
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--hosts-cmd", required=True, help="starts tests/lib/cloud_hosts.lua")
    p.add_argument("--watch-pid", type=int, default=0, help="exit when this process is gone")
    p.add_argument("--preinstalled-skyrun", action="store_true",
                   help="machines come with the tests' skyrun in its cache (a custom image): no upload")


def serve(cloud, args):
    Handler.cloud = cloud

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server((cloud.hosts.gateway, 0), Handler)
    port = server.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s %d\n" % (cloud.hosts.gateway, port))
    os.rename(tmp, args.port_file)
    if args.watch_pid:
        def watch():
            while True:
                try:
                    os.kill(args.watch_pid, 0)
                except OSError:
                    cloud.hosts.proc.stdin.close()
                    os._exit(0)
                time.sleep(0.3)
        threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        cloud.hosts.proc.stdin.close()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def run(cloud_class, doc, api_key_file=False, extra=()):
    """The main of a stand-in: the common flags, --api-key-file when api_key_file, and extra
    (a list of (flags, argparse keywords)); serves until killed."""
    import argparse
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_common_args(p)
    if api_key_file:
        p.add_argument("--api-key-file", required=True, help="the account's API key (Authorization: Bearer)")
    for flags, kw in extra:
        p.add_argument(*flags, **kw)
    args = p.parse_args()
    if api_key_file:
        with open(args.api_key_file) as f:
            args.api_key = f.read().strip()
    try:
        serve(cloud_class(args), args)
    except KeyboardInterrupt:
        sys.exit(0)
