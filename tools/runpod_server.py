#!/usr/bin/env python3
"""A loopback stand-in for RunPod's APIs, for tests, written from RunPod's API references
(docs.runpod.io: the GraphQL API's gpuTypes, podFindAndDeployOnDemand and podRentInterruptable;
the REST API's /v1/pods): the parts sky.providers.runpod calls.

  POST /graphql            {"query": ..., "variables": {...}}; the operation is the query's root
                           field; inputs are checked field by field against the documented input
                           types (an unknown or missing required field is a GraphQL error)
  GET  /v1/pods            the account's pods        GET /v1/pods/<id>    one pod
  DELETE /v1/pods/<id>     terminate

Requests need "Authorization: Bearer <--api-key-file's key>"; each pod's own RUNPOD_API_KEY (in its
environment, with RUNPOD_POD_ID) is accepted for GET and DELETE of that pod only. A pod is a
network namespace run as a container would be: its start command (dockerArgs) runs as root in a
private mount namespace with its own /root, /etc/ssh and /run (tests/lib/cloud_hosts.lua), with
PUBLIC_KEY and the pod's variables in its environment; it is what starts sshd there. A reclaimed
interruptible pod is EXITED. Faults: actions are the GraphQL operations and "get", "delete".

    tools/runpod_server.py --state-dir D --port-file F --log F --hosts-cmd CMD --api-key-file F
"""

import json
import os
import re
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud_standin  # noqa: E402

# id, displayName, memoryInGb, uninterruptable $/GPU/h, minimum bid $/GPU/h, vCPUs per GPU, memory per GPU
GPU_TYPES = [
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 0.82, 8, 117),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 1.89, 0.99, 16, 125),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 1.75, 20, 125),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34, 6, 41),
]
DEPLOY_FIELDS = {"name", "imageName", "gpuTypeId", "gpuCount", "cloudType", "containerDiskInGb", "volumeInGb",
                 "volumeMountPath", "ports", "supportPublicIp", "dockerArgs", "env", "minVcpuCount", "minMemoryInGb",
                 "startSsh", "startJupyter", "templateId", "dataCenterId", "countryCode", "networkVolumeId",
                 "allowedCudaVersions", "minDownload", "minUpload", "deployCost", "containerRegistryAuthId"}
REQUIRED = {"gpuTypeId", "gpuCount", "cloudType", "containerDiskInGb", "imageName"}
CLOUD_TYPES = {"ALL", "SECURE", "COMMUNITY"}


class Bad(Exception):
    def __init__(self, status, msg, graphql=False):
        super().__init__(msg)
        self.status, self.msg, self.graphql = status, msg, graphql


class RunPod(cloud_standin.Cloud):
    def __init__(self, args):
        super().__init__(args)
        self.key = args.api_key
        self.pod_keys = {}   # key -> pod id

    def handle(self, h, method, body):
        path = h.path.split("?", 1)[0]
        try:
            auth = h.headers.get("Authorization") or ""
            token = auth[7:] if auth.startswith("Bearer ") else None
            who = "owner" if token == self.key else self.pod_keys.get(token or "")
            if not who:
                raise Bad(401, "Unauthorized: invalid or missing API key")
            self.log({"method": method, "path": path, "body": body.decode(errors="replace"),
                      "as": "owner" if who == "owner" else "pod"})
            m = re.match(r"^/v1/pods/([a-z0-9]+)$", path)
            if who != "owner" and not (m and m.group(1) == who and method in ("GET", "DELETE")):
                raise Bad(403, "this key may only read or terminate its own pod")
            if method == "POST" and path == "/graphql":
                return self.graphql(h, body)
            if method == "GET" and path == "/v1/pods":
                return h.send(200, json.dumps([self.view(i) for i in self.order]))
            if m and method == "GET":
                self.fault("get", {"id": m.group(1)})
                if m.group(1) not in self.instances:
                    raise Bad(404, "pod not found")
                return h.send(200, json.dumps(self.view(m.group(1))))
            if m and method == "DELETE":
                self.fault("delete", {"id": m.group(1)})
                if m.group(1) not in self.instances:
                    raise Bad(404, "pod not found")
                self.end(m.group(1), "terminated", "terminated" if who == "owner" else "terminated by its own key")
                h.send_response(204)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            raise Bad(404, "no route %s %s" % (method, path))
        except Bad as e:
            if e.graphql:
                return h.send(200, json.dumps({"errors": [{"message": e.msg}], "data": None}))
            h.send(e.status, json.dumps({"error": e.msg}))

    def fault(self, action, fields, graphql=False):
        f = self.fault_for(action, fields)
        if f:
            raise Bad(f.get("status", 400), f.get("message", "injected fault"), graphql and f.get("status") is None)

    def graphql(self, h, body):
        try:
            req = json.loads(body)
        except ValueError:
            raise Bad(400, "the body is not JSON")
        query, variables = req.get("query"), req.get("variables") or {}
        if not isinstance(query, str) or set(req) - {"query", "variables", "operationName"}:
            raise Bad(400, "expected {query, variables}")
        root = re.search(r"\{\s*(\w+)", query)
        op = root.group(1) if root else None
        if op == "gpuTypes":
            count = variables.get("gpuCount", 1)
            if not isinstance(count, int) or count < 1:
                raise Bad(200, "Variable $gpuCount must be a positive Int", True)
            self.fault("gpuTypes", {})
            out = []
            for gid, name, mem, od, bid, cpus, ram in GPU_TYPES:
                out.append({"id": gid, "displayName": name, "memoryInGb": mem, "secureCloud": True, "communityCloud": True,
                            "lowestPrice": {"minimumBidPrice": bid, "uninterruptablePrice": od, "minVcpu": cpus * count,
                                            "minMemory": ram * count, "stockStatus": "High"}})
            return h.send(200, json.dumps({"data": {"gpuTypes": out}}))
        if op in ("podFindAndDeployOnDemand", "podRentInterruptable"):
            inp = variables.get("input")
            if not isinstance(inp, dict):
                raise Bad(200, "Variable $input of required type is missing", True)
            allowed = DEPLOY_FIELDS | ({"bidPerGpu"} if op == "podRentInterruptable" else set())
            unknown = sorted(set(inp) - allowed)
            if unknown:
                raise Bad(200, 'Variable "$input" got invalid value; Field "%s" is not defined by type' % unknown[0], True)
            missing = sorted((REQUIRED | ({"bidPerGpu"} if op == "podRentInterruptable" else set())) - set(inp))
            if missing:
                raise Bad(200, 'Variable "$input" got invalid value; Field "%s" of required type was not provided' % missing[0], True)
            if inp["cloudType"] not in CLOUD_TYPES:
                raise Bad(200, "cloudType must be ALL, SECURE or COMMUNITY", True)
            gpu = next((g for g in GPU_TYPES if g[0] == inp["gpuTypeId"]), None)
            if not gpu:
                raise Bad(200, "There are no longer any instances available with the requested specifications. "
                          "Please refresh and try again.", True)
            if op == "podRentInterruptable" and inp["bidPerGpu"] < gpu[4]:
                raise Bad(200, "Your bid is below the minimum bid price of $%.2f" % gpu[4], True)
            self.fault(op, {"gpuTypeId": inp["gpuTypeId"]}, graphql=True)
            return h.send(200, json.dumps({"data": {op: self.deploy(op, inp, gpu)}}))
        raise Bad(200, "Cannot query field \"%s\" on type \"Query\"." % op, True)

    def deploy(self, op, inp, gpu):
        pid = secrets.token_hex(7)
        key = "rpa_" + secrets.token_hex(20)
        self.pod_keys[key] = pid
        env = {e["key"]: e["value"] for e in inp.get("env", [])}
        env.update({"RUNPOD_POD_ID": pid, "RUNPOD_API_KEY": key})
        spot = op == "podRentInterruptable"
        cost = (inp["bidPerGpu"] if spot else gpu[3]) * inp["gpuCount"]
        rec = {"name": inp.get("name", ""), "gpu": gpu, "gpu_count": inp["gpuCount"], "spot": spot, "cost": cost,
               "image": inp["imageName"], "docker_args": inp.get("dockerArgs", "")}
        # the start command is what starts sshd on a pod: the machine runs it as a container would
        self.launch(pid, env.get("PUBLIC_KEY", ""), rec, user_data=inp.get("dockerArgs") or "", env=env, container=True)
        return {"id": pid, "costPerHr": cost}

    def view(self, pid):
        i = self.instances[pid]
        status = {"running": "RUNNING", "terminated": "TERMINATED", "exited": "EXITED"}.get(i["state"], "EXITED")
        return {"id": pid, "name": i["name"], "desiredStatus": status, "imageName": i["image"], "costPerHr": i["cost"],
                "gpuCount": i["gpu_count"], "gpu": {"id": i["gpu"][0], "displayName": i["gpu"][1]},
                "interruptible": i["spot"], "createdAt": cloud_standin.iso(i["launched"]),
                "publicIp": i["addr"] if i["state"] == "running" else None,
                "portMappings": {"22": 22} if i["state"] == "running" else {}}

    def interrupt(self, pid):
        self.end(pid, "exited", "spot-interruption")


if __name__ == "__main__":
    cloud_standin.run(RunPod, __doc__, api_key_file=True)
