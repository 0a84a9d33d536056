#!/usr/bin/env python3
"""A loopback stand-in for the Lambda Cloud API (cloud.lambda.ai/api/v1), for tests, written from
Lambda's API reference (docs.lambda.ai/api/cloud): the parts sky.providers.lambda calls.

  GET  /api/v1/instance-types                    prices, specs, regions with capacity
  GET|POST /api/v1/ssh-keys                      the account's keys ({name, public_key})
  POST /api/v1/instance-operations/launch        {region_name, instance_type_name, ssh_key_names,
                                                  quantity, name, ...}: {"data": {"instance_ids"}}
  POST /api/v1/instance-operations/terminate     {instance_ids}
  GET  /api/v1/instances[/<id>]

Requests need "Authorization: Bearer <--api-key-file's key>". Errors are Lambda's
{"error": {"code", "message", "suggestion"}}; unknown or missing fields are refused
("global/invalid-parameters"). Instances are network namespaces running sshd that log in as
"ubuntu" (tools/cloud_standin.py). A terminate request that comes from the instance's own address
is recorded as the instance ending itself. Faults: actions "launch", "terminate", "get".

    tools/lambda_server.py --state-dir D --port-file F --log F --hosts-cmd CMD --api-key-file F
"""

import json
import os
import re
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud_standin  # noqa: E402

# name, description, gpu description, cents per hour, vCPUs, memory GiB, storage GiB, GPUs, regions
TYPES = [
    ("gpu_1x_a100", "1x A100 (40 GB PCIe)", "A100 (40 GB PCIe)", 129, 30, 200, 512, 1, ["us-east-1", "us-west-2"]),
    ("gpu_1x_a100_sxm4", "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129, 30, 200, 512, 1, ["us-south-1"]),
    ("gpu_8x_a100_80gb_sxm4", "8x A100 (80 GB SXM4)", "A100 (80 GB SXM4)", 1432, 240, 1800, 19500, 8, ["us-east-1"]),
    ("gpu_1x_h100_pcie", "1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249, 26, 200, 1000, 1, ["us-west-1"]),
]
LAUNCH_FIELDS = {"region_name", "instance_type_name", "ssh_key_names", "quantity", "name", "file_system_names",
                 "hostname", "image", "user_data", "tags", "firewall_rulesets"}


class Bad(Exception):
    def __init__(self, status, code, msg):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class Lambda(cloud_standin.Cloud):
    def __init__(self, args):
        super().__init__(args)
        self.key = args.api_key
        self.ssh_keys = {}

    def handle(self, h, method, body):
        path = h.path.split("?", 1)[0]
        try:
            if (h.headers.get("Authorization") or "") != "Bearer " + self.key:
                raise Bad(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.")
            try:
                data = json.loads(body) if body else None
            except ValueError:
                raise Bad(400, "global/invalid-parameters", "the body is not JSON")
            self.log({"method": method, "path": path, "body": body.decode(errors="replace"), "from": h.client_address[0]})
            if method == "GET" and path == "/api/v1/instance-types":
                return self.ok(h, {t[0]: self.type_view(t) for t in TYPES})
            if method == "GET" and path == "/api/v1/ssh-keys":
                return self.ok(h, list(self.ssh_keys.values()))
            if method == "POST" and path == "/api/v1/ssh-keys":
                return self.ok(h, self.add_key(data or {}))
            if method == "POST" and path == "/api/v1/instance-operations/launch":
                return self.ok(h, self.launch_op(data or {}))
            if method == "POST" and path == "/api/v1/instance-operations/terminate":
                return self.ok(h, self.terminate_op(data or {}, h.client_address[0]))
            if method == "GET" and path == "/api/v1/instances":
                return self.ok(h, [self.view(i) for i in self.order])
            m = re.match(r"^/api/v1/instances/([0-9a-f]+)$", path)
            if m and method == "GET":
                self.fault("get", {"id": m.group(1)})
                if m.group(1) not in self.instances:
                    raise Bad(404, "global/object-does-not-exist", "Specified instance does not exist.")
                return self.ok(h, self.view(m.group(1)))
            raise Bad(404, "global/not-found", "no route %s %s" % (method, path))
        except Bad as e:
            h.send(e.status, json.dumps({"error": {"code": e.code, "message": e.msg, "suggestion": ""}}))

    def ok(self, h, data):
        h.send(200, json.dumps({"data": data}))

    def fault(self, action, fields):
        f = self.fault_for(action, fields)
        if f:
            raise Bad(f.get("status", 400), f.get("code", "global/unknown"), f.get("message", "injected fault"))

    def type_view(self, t):
        name, desc, gdesc, cents, cpus, mem, disk, gpus, regions = t
        return {"instance_type": {"name": name, "description": desc, "gpu_description": gdesc, "price_cents_per_hour": cents,
                                  "specs": {"vcpus": cpus, "memory_gib": mem, "storage_gib": disk, "gpus": gpus}},
                "regions_with_capacity_available": [{"name": r, "description": r} for r in regions]}

    def add_key(self, data):
        if set(data) - {"name", "public_key"} or not isinstance(data.get("name"), str):
            raise Bad(400, "global/invalid-parameters", "expected {name, public_key}")
        if data["name"] in self.ssh_keys:
            raise Bad(400, "global/invalid-parameters", "An SSH key with that name already exists.")
        key = {"id": secrets.token_hex(16), "name": data["name"], "public_key": data.get("public_key", "").strip()}
        self.ssh_keys[data["name"]] = key
        return key

    def launch_op(self, data):
        unknown = set(data) - LAUNCH_FIELDS
        if unknown:
            raise Bad(400, "global/invalid-parameters", "unknown fields %s" % sorted(unknown))
        for f in ("region_name", "instance_type_name", "ssh_key_names"):
            if f not in data:
                raise Bad(400, "global/invalid-parameters", "%s is required" % f)
        if not isinstance(data["ssh_key_names"], list) or len(data["ssh_key_names"]) != 1:
            raise Bad(400, "global/invalid-parameters", "Exactly one SSH key must be specified.")
        key = self.ssh_keys.get(data["ssh_key_names"][0])
        if not key:
            raise Bad(400, "global/invalid-parameters", "SSH key %s does not exist." % data["ssh_key_names"][0])
        t = next((t for t in TYPES if t[0] == data["instance_type_name"]), None)
        if not t:
            raise Bad(400, "instance-operations/launch/instance-type-unavailable", "Invalid instance type.")
        if data["region_name"] not in t[8]:
            raise Bad(400, "instance-operations/launch/insufficient-capacity", "Not enough capacity to fulfill launch request.")
        self.fault("launch", {"instance_type_name": t[0], "region_name": data["region_name"]})
        ids = []
        for _ in range(int(data.get("quantity", 1))):
            iid = secrets.token_hex(16)
            rec = {"name": data.get("name", ""), "type": t, "region": data["region_name"], "key_name": key["name"]}
            self.launch(iid, key["public_key"], rec, login_as=["ubuntu"])
            ids.append(iid)
        return {"instance_ids": ids}

    def terminate_op(self, data, source):
        ids = data.get("instance_ids")
        if set(data) - {"instance_ids"} or not isinstance(ids, list) or not ids:
            raise Bad(400, "global/invalid-parameters", "expected {instance_ids: [...]}")
        self.fault("terminate", {})
        out = []
        for iid in ids:
            inst = self.instances.get(iid)
            if not inst:
                raise Bad(404, "global/object-does-not-exist", "Specified instance does not exist.")
            self.end(iid, "terminated", "terminated from the instance itself" if source == inst["addr"] else "terminated")
            out.append(self.view(iid))
        return {"terminated_instances": out}

    def view(self, iid):
        i = self.instances[iid]
        t = i["type"]
        status = {"running": "active", "terminated": "terminated"}.get(i["state"], i["state"])
        return {"id": iid, "name": i["name"], "status": status, "ip": i["addr"] if status == "active" else None,
                "private_ip": i["addr"] if status == "active" else None, "region": {"name": i["region"]},
                "instance_type": self.type_view(t)["instance_type"], "ssh_key_names": [i["key_name"]]}


if __name__ == "__main__":
    cloud_standin.run(Lambda, __doc__, api_key_file=True)
