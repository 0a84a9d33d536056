#!/usr/bin/env python3
"""A loopback stand-in for the Vast.ai REST API (console.vast.ai/api/v0), for tests, written from
Vast.ai's API reference (docs.vast.ai/api-reference): the parts sky.providers.vastai calls.

  POST   /api/v0/bundles/            search offers: a JSON query of {field: {op: value}} filters
                                     (eq, neq, gt, gte, lt, lte, in, notin), "type" ("ondemand",
                                     "bid", "reserved"), "order" [[field, "asc"|"desc"]], "limit"
  PUT    /api/v0/asks/<offer id>/    rent it: {client_id: "me", image, disk, label, onstart,
                                     runtype, price (a bid: interruptible), env}
  GET    /api/v0/instances/[<id>/]   instances (one: {"instances": {...}})
  DELETE /api/v0/instances/<id>/     destroy
  GET|POST /api/v0/ssh/              the account's SSH keys (new instances accept them)

Requests need "Authorization: Bearer <--api-key>"; an instance's own CONTAINER_API_KEY (in its
environment, with CONTAINER_ID) is accepted for GET and DELETE of that instance only. Unknown
fields in a body or a query are refused (400), as are missing required ones. Instances are
network namespaces running sshd (tools/cloud_standin.py) whose `onstart` runs at start. A
reclaimed (outbid) instance is "exited". Faults: actions "search", "create", "destroy", "show".

    tools/vastai_server.py --state-dir D --port-file F --log F --hosts-cmd CMD --api-key-file F
"""

import json
import os
import re
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud_standin  # noqa: E402

# id, gpu_name, num_gpus, gpu_ram MB, cpus, cpu_ram MB, disk GB, dph_total, min_bid, geolocation
OFFERS = [
    (5001, "A100 SXM4", 1, 81920, 16, 128000, 200, 1.40, 0.61, "US"),
    (5002, "A100 PCIE", 1, 40960, 12, 64000, 100, 0.95, 0.42, "CA"),
    (5003, "A100 SXM4", 8, 81920, 128, 1024000, 2000, 10.50, 4.80, "US"),
    (5004, "H100 SXM", 1, 81920, 24, 256000, 300, 2.35, 1.10, "DE"),
    (5005, "RTX 4090", 1, 24564, 16, 64000, 100, 0.35, 0.16, "PL"),
]
OFFER_FIELDS = {"id", "gpu_name", "num_gpus", "gpu_ram", "cpu_cores_effective", "cpu_ram", "disk_space", "dph_total",
                "min_bid", "geolocation", "rentable", "verified", "reliability2", "inet_down", "cuda_max_good", "type"}
OPS = {"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"}
CREATE_FIELDS = {"client_id", "image", "disk", "label", "onstart", "runtype", "price", "env", "args", "image_login",
                 "template_hash_id", "python_utf8", "lang_utf8", "use_jupyter_lab", "jupyter_dir", "force", "cancel_unavail"}
RUNTYPES = {"ssh", "ssh_direc", "ssh_proxy", "jupyter", "jupyter_direc", "args"}


class Bad(Exception):
    def __init__(self, status, error, msg):
        super().__init__(msg)
        self.status, self.error, self.msg = status, error, msg


def offer_view(o, kind):
    oid, gpu, n, gram, cpus, ram, disk, dph, bid, geo = o
    return {"id": oid, "gpu_name": gpu, "num_gpus": n, "gpu_ram": gram, "cpu_cores_effective": cpus, "cpu_ram": ram,
            "disk_space": disk, "dph_total": dph, "min_bid": bid, "geolocation": geo, "rentable": True,
            "verified": True, "reliability2": 0.995, "inet_down": 900.0, "cuda_max_good": 12.4, "type": kind}


def matches(value, cond):
    for op, want in cond.items():
        if op not in OPS:
            raise Bad(400, "invalid_args", "unknown operator %s" % op)
        if op == "eq" and value != want or op == "neq" and value == want:
            return False
        if op == "gt" and not value > want or op == "gte" and not value >= want:
            return False
        if op == "lt" and not value < want or op == "lte" and not value <= want:
            return False
        if op == "in" and value not in want or op == "notin" and value in want:
            return False
    return True


class Vast(cloud_standin.Cloud):
    def __init__(self, args):
        super().__init__(args)
        self.key = args.api_key
        self.ssh_keys = []
        self.container_keys = {}   # key -> instance id
        self.next_id = 7000000

    def handle(self, h, method, body):
        path = h.path.split("?", 1)[0]
        try:
            auth = h.headers.get("Authorization") or ""
            token = auth[7:] if auth.startswith("Bearer ") else None
            if not token:
                raise Bad(401, "auth_error", "missing Authorization: Bearer <api key>")
            who = "owner" if token == self.key else self.container_keys.get(token)
            if not who:
                raise Bad(401, "auth_error", "invalid api key")
            try:
                data = json.loads(body) if body else None
            except ValueError:
                raise Bad(400, "invalid_args", "the body is not JSON")
            self.log({"method": method, "path": path, "body": body.decode(errors="replace"), "as": "owner" if who == "owner" else "instance"})
            m = re.match(r"^/api/v0/instances/(\d+)/$", path)
            if who != "owner" and not (m and m.group(1) == who and method in ("GET", "DELETE")):
                raise Bad(403, "forbidden", "this key may only show or destroy its own instance")
            if method == "POST" and path == "/api/v0/bundles/":
                return self.reply(h, self.search(data or {}))
            if method == "GET" and path == "/api/v0/ssh/":
                return self.reply(h, [{"id": i + 1, "public_key": k} for i, k in enumerate(self.ssh_keys)])
            if method == "POST" and path == "/api/v0/ssh/":
                return self.reply(h, self.add_key(data or {}))
            m2 = re.match(r"^/api/v0/asks/(\d+)/$", path)
            if method == "PUT" and m2:
                return self.reply(h, self.create(int(m2.group(1)), data or {}))
            if method == "GET" and path == "/api/v0/instances/":
                return self.reply(h, {"instances": [self.view(i) for i in self.order]})
            if m and method == "GET":
                self.fault("show", {"id": m.group(1)})
                if m.group(1) not in self.instances:
                    raise Bad(404, "no_such_instance", "Instance %s not found" % m.group(1))
                return self.reply(h, {"instances": self.view(m.group(1))})
            if m and method == "DELETE":
                self.fault("destroy", {"id": m.group(1)})
                if m.group(1) not in self.instances:
                    raise Bad(404, "no_such_instance", "Instance %s not found" % m.group(1))
                self.end(m.group(1), "terminated", "destroyed" if who == "owner" else "destroyed by its own key")
                return self.reply(h, {"success": True})
            raise Bad(404, "not_found", "no route %s %s" % (method, path))
        except Bad as e:
            h.send(e.status, json.dumps({"success": False, "error": e.error, "msg": e.msg}))

    def reply(self, h, obj):
        h.send(200, json.dumps(obj))

    def fault(self, action, fields):
        f = self.fault_for(action, fields)
        if f:
            raise Bad(f.get("status", 400), f.get("code", "injected"), f.get("message", "injected fault"))

    def search(self, q):
        self.fault("search", {})
        kind = q.get("type", "ondemand")
        if kind not in ("ondemand", "bid", "reserved"):
            raise Bad(400, "invalid_args", "type must be ondemand, bid or reserved")
        filters = {k: v for k, v in q.items() if k not in ("type", "order", "limit")}
        for k, v in filters.items():
            if k not in OFFER_FIELDS:
                raise Bad(400, "invalid_args", "unknown search field %s" % k)
            if not isinstance(v, dict):
                raise Bad(400, "invalid_args", "filter %s must be {op: value}" % k)
        out = [offer_view(o, kind) for o in OFFERS]
        out = [o for o in out if all(matches(o[k], v) for k, v in filters.items())]
        for field, direction in reversed(q.get("order") or []):
            if field not in OFFER_FIELDS or direction not in ("asc", "desc"):
                raise Bad(400, "invalid_args", "bad order %s %s" % (field, direction))
            out.sort(key=lambda o: o[field], reverse=direction == "desc")
        return {"offers": out[: int(q.get("limit", 64))]}

    def add_key(self, data):
        if set(data) != {"ssh_key"} or not isinstance(data["ssh_key"], str):
            raise Bad(400, "invalid_args", "expected {ssh_key: string}")
        if not re.match(r"^ssh-(ed25519|rsa) [A-Za-z0-9+/=]+", data["ssh_key"]):
            raise Bad(400, "invalid_args", "not an OpenSSH public key")
        self.ssh_keys.append(data["ssh_key"].strip())
        return {"success": True, "key": {"id": len(self.ssh_keys), "public_key": data["ssh_key"].strip()}}

    def create(self, offer_id, data):
        unknown = set(data) - CREATE_FIELDS
        if unknown:
            raise Bad(400, "invalid_args", "unknown fields %s" % sorted(unknown))
        if data.get("client_id") != "me" or not isinstance(data.get("image"), str):
            raise Bad(400, "invalid_args", "client_id \"me\" and image are required")
        if data.get("runtype", "ssh") not in RUNTYPES:
            raise Bad(400, "invalid_args", "unknown runtype %s" % data.get("runtype"))
        offer = next((o for o in OFFERS if o[0] == offer_id), None)
        if not offer:
            raise Bad(400, "no_such_ask", "Instance type no longer available")
        if "price" in data and (not isinstance(data["price"], (int, float)) or data["price"] < offer[8]):
            raise Bad(400, "invalid_args", "bid below the minimum %.2f" % offer[8])
        self.fault("create", {"offer": offer_id})
        if not self.ssh_keys:
            raise Bad(400, "invalid_args", "no SSH key on the account")
        self.next_id += 1
        iid = str(self.next_id)
        ckey = secrets.token_hex(32)
        self.container_keys[ckey] = iid
        rec = {"offer": offer_view(offer, "bid" if "price" in data else "ondemand"), "label": data.get("label", ""),
               "image": data["image"], "spot": "price" in data, "price": data.get("price"), "onstart": data.get("onstart", "")}
        self.launch(iid, "\n".join(self.ssh_keys), rec, user_data=data.get("onstart") or "",
                    env={"CONTAINER_ID": iid, "CONTAINER_API_KEY": ckey})
        return {"success": True, "new_contract": int(iid)}

    def view(self, iid):
        i = self.instances[iid]
        o = i["offer"]
        status = {"running": "running", "terminated": "exited", "exited": "exited"}.get(i["state"], i["state"])
        v = {"id": int(iid), "label": i["label"], "image_uuid": i["image"], "actual_status": status,
             "intended_status": "running" if i["state"] == "running" else "stopped",
             "gpu_name": o["gpu_name"], "num_gpus": o["num_gpus"], "gpu_ram": o["gpu_ram"], "dph_total": i["price"] or o["dph_total"],
             "is_bid": i["spot"], "start_date": i["launched"], "public_ipaddr": i["addr"] if i["state"] == "running" else "",
             "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "22"}]} if i["state"] == "running" else {},
             "status_msg": {"spot-interruption": "outbid: the instance was stopped"}.get(i.get("reason"), "")}
        return v

    def interrupt(self, iid):
        self.end(iid, "exited", "spot-interruption")


if __name__ == "__main__":
    cloud_standin.run(Vast, __doc__, api_key_file=True)
