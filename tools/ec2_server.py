#!/usr/bin/env python3
"""A loopback stand-in for AWS EC2 (and the SSM and Price List calls the aws provider makes), for
tests. Written from the EC2 API reference and checked against the real service models: every
request is decoded with the EC2 Query protocol's rules from botocore's ec2/2016-11-15 model (an
unknown parameter is an error, as EC2's UnknownParameter), validated with botocore's own
ParamValidator, and its SigV4 signature recomputed with botocore's SigV4Auth; answers are
serialized from the model's output shapes into EC2's XML (JSON for SSM and Pricing).

Instances are network namespaces running sshd (tools/cloud_standin.py, tests/lib/cloud_hosts.lua):
RunInstances starts one per instance with the imported key pair's public key, runs the decoded
UserData there, and an instance that runs `shutdown` is terminated when its
InstanceInitiatedShutdownBehavior is "terminate" (stopped otherwise).

    tools/ec2_server.py --state-dir D --port-file F --log F --hosts-cmd CMD --credentials F
        [--region us-east-1] [--deny Action,Action] [--watch-pid PID]

--credentials: a JSON list of {"access_key_id", "secret_access_key", "session_token"?}; a key
with a session token is accepted only with that token. --deny: actions answered with
UnauthorizedOperation. Faults: see tools/cloud_standin.py (actions are EC2 action names,
"GetParameter", "GetProducts"; RunInstances faults may match InstanceType, AvailabilityZone
and Market = "spot" | "on-demand").
"""

import base64
import datetime
import hashlib
import json
import os
import re
import sys
import time
import uuid
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cloud_standin  # noqa: E402

import botocore.loaders  # noqa: E402
import botocore.model  # noqa: E402
import botocore.validate  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

LOADER = botocore.loaders.Loader()
MODELS = {name: botocore.model.ServiceModel(LOADER.load_service_model(name, "service-2"), name)
          for name in ("ec2", "ssm", "pricing")}
EC2 = MODELS["ec2"]

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
DLAMI_ID = "ami-0d1a2b3c4d5e6f708"

# instance type -> vCPUs, memory MiB, (GPU name, count, MiB each) or None, on-demand USD/h
TYPES = {
    "p4d.24xlarge": (96, 1179648, ("A100", 8, 40960), 32.7726),
    "p4de.24xlarge": (96, 1179648, ("A100", 8, 81920), 40.9657),
    "p5.48xlarge": (192, 2097152, ("H100", 8, 81920), 98.32),
    "g5.xlarge": (4, 16384, ("A10G", 1, 24576), 1.006),
    "g5.2xlarge": (8, 32768, ("A10G", 1, 24576), 1.212),
    "g5.12xlarge": (48, 196608, ("A10G", 4, 24576), 5.672),
    "g4dn.xlarge": (4, 16384, ("T4", 1, 15360), 0.526),
    "m6i.large": (2, 8192, None, 0.096),
    "m6i.xlarge": (4, 16384, None, 0.192),
    "m6i.2xlarge": (8, 32768, None, 0.384),
}
ZONES = ("a", "b", "c")
SPOT_FACTOR = {"a": 0.36, "b": 0.33, "c": 0.40}
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}


class ApiError(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# ---- the EC2 Query protocol, from the model -----------------------------------------------------

def wire_name(member_name, shape):
    ser = shape.serialization
    if ser.get("queryName"):
        return ser["queryName"]
    if ser.get("name"):
        return ser["name"][0].upper() + ser["name"][1:]
    return member_name


def decode_query(flat, shape, prefix, used):
    """The parameters under prefix, typed by shape; keys read are added to used."""
    if shape.type_name == "structure":
        out = {}
        for name, member in shape.members.items():
            key = (prefix + "." if prefix else "") + wire_name(name, member)
            if any(k == key or k.startswith(key + ".") for k in flat):
                out[name] = decode_query(flat, member, key, used)
        return out
    if shape.type_name == "list":
        idx = sorted({int(m.group(1)) for k in flat for m in [re.match(re.escape(prefix) + r"\.(\d+)(\.|$)", k)] if m})
        return [decode_query(flat, shape.member, "%s.%d" % (prefix, i), used) for i in idx]
    used.add(prefix)
    raw = flat.get(prefix)
    if raw is None:
        raise ApiError("InvalidParameterValue", "Value for parameter %s is missing" % prefix)
    t = shape.type_name
    if t in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise ApiError("InvalidParameterValue", "Invalid value '%s' for %s: not an integer" % (raw, prefix))
    if t == "boolean":
        if raw not in ("true", "false"):
            raise ApiError("InvalidParameterValue", "Invalid value '%s' for %s: not a boolean" % (raw, prefix))
        return raw == "true"
    if t in ("float", "double"):
        return float(raw)
    if t == "blob":
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            raise ApiError("InvalidParameterValue", "Value for %s is not valid base64" % prefix)
    return raw


def validate(params, shape):
    try:
        botocore.validate.validate_parameters(params, shape)
    except botocore.exceptions.ParamValidationError as e:
        raise ApiError("InvalidParameterValue", str(e).replace("\n", " "))


def xml_inner(value, shape):
    """The content of an element holding value (EC2's XML: lists as <item> elements)."""
    if shape.type_name == "structure":
        return "".join(xml_value(value[m], mshape, m) for m, mshape in shape.members.items() if value.get(m) is not None)
    if shape.type_name == "list":
        return "".join("<item>%s</item>" % xml_inner(v, shape.member) for v in value)
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        return cloud_standin.iso(value)
    return escape(str(value))


def xml_value(value, shape, name):
    tag = shape.serialization.get("name", name)
    return "<%s>%s</%s>" % (tag, xml_inner(value, shape), tag)


def xml_answer(action, output_shape, result):
    body = "".join(xml_value(result[m], s, m) for m, s in output_shape.members.items()
                   if result.get(m) is not None) if output_shape else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            "<requestId>%s</requestId>%s</%sResponse>" % (action, uuid.uuid4(), body, action))


# ---- the account ------------------------------------------------------------------------------------

class Ec2(cloud_standin.Cloud):
    def __init__(self, args):
        super().__init__(args)
        self.region = args.region
        with open(args.credentials) as f:
            self.keys = {c["access_key_id"]: c for c in json.load(f)}
        self.deny = set(filter(None, (args.deny or "").split(",")))
        self.vpc = "vpc-0a1b2c3d4e5f60718"
        self.subnets = {z: "subnet-0%s1b2c3d4e5f6071" % z for z in ZONES}
        self.key_pairs = {}
        self.groups = {}
        self.reservations = {}
        self.tokens = {}
        self.describes = {}

    # ---- requests ----

    def handle(self, h, method, body):
        target = h.headers.get("X-Amz-Target")
        service = "ec2"
        if target:
            service = "ssm" if target.startswith("AmazonSSM.") else "pricing" if target.startswith("AWSPriceListService.") else "?"
        try:
            if method != "POST":
                raise ApiError("InvalidAction", "only POST is served here", 400)
            self.check_signature(h, body, service)
            if service == "ec2":
                return self.handle_ec2(h, body)
            return self.handle_json(h, body, service, target)
        except ApiError as e:
            self.log({"service": service, "action": getattr(e, "action", None), "error": e.code})
            if service == "ec2":
                xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code><Message>%s</Message>'
                       "</Error></Errors><RequestID>%s</RequestID></Response>" % (e.code, escape(e.message), uuid.uuid4()))
                return h.send(e.status, xml, "text/xml;charset=UTF-8")
            return h.send(e.status, json.dumps({"__type": e.code, "message": e.message}), "application/x-amz-json-1.1")

    def check_signature(self, h, body, service):
        auth = h.headers.get("Authorization") or ""
        m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", auth)
        if not m:
            raise ApiError("AuthFailure" if service == "ec2" else "IncompleteSignatureException",
                           "AWS was not able to validate the provided access credentials (no SigV4 Authorization)", 401)
        akid, date, region, scope_service, signed, signature = m.groups()
        key = self.keys.get(akid)
        if not key:
            raise ApiError("AuthFailure" if service == "ec2" else "UnrecognizedClientException",
                           "AWS was not able to validate the provided access credentials", 401)
        want_region = "us-east-1" if service == "pricing" else self.region
        if scope_service != service or region != want_region:
            raise ApiError("SignatureDoesNotMatch", "Credential should be scoped to %s/%s, not %s/%s"
                           % (want_region, service, region, scope_service), 403)
        amz_date = h.headers.get("X-Amz-Date") or ""
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise ApiError("SignatureDoesNotMatch", "X-Amz-Date is missing or malformed", 403)
        if abs(time.time() - when.timestamp()) > 300 or amz_date[:8] != date:
            raise ApiError("SignatureDoesNotMatch", "Signature expired or the credential date is not X-Amz-Date's", 403)
        names = signed.split(";")
        for required in ("host", "x-amz-date"):
            if required not in names:
                raise ApiError("SignatureDoesNotMatch", "%s is not signed" % required, 403)
        token = key.get("session_token")
        if token and (h.headers.get("X-Amz-Security-Token") != token or "x-amz-security-token" not in names):
            raise ApiError("AuthFailure" if service == "ec2" else "UnrecognizedClientException",
                           "The security token included in the request is invalid", 401)
        headers = {}
        for n in names:
            v = h.headers.get(n)
            if v is None:
                raise ApiError("SignatureDoesNotMatch", "signed header %s is missing" % n, 403)
            headers[n] = v
        req = AWSRequest(method="POST", url="http://%s%s" % (h.headers.get("Host"), h.path), data=body, headers=headers)
        req.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(akid, key["secret_access_key"], token), scope_service, region)
        expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if expected != signature:
            raise ApiError("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                           "you provided", 403)

    def handle_ec2(self, h, body):
        if not (h.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            raise ApiError("InvalidParameterValue", "EC2 takes application/x-www-form-urlencoded bodies")
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        flat = dict(pairs)
        action = flat.pop("Action", None)
        version = flat.pop("Version", None)
        if version != "2016-11-15":
            raise ApiError("InvalidParameterValue", "Version must be 2016-11-15 (got %s)" % version)
        if action not in EC2.operation_names:
            raise ApiError("InvalidAction", "The action %s is not valid for this web service." % action)
        op = EC2.operation_model(action)
        used = set()
        params = decode_query(flat, op.input_shape, "", used) if op.input_shape else {}
        unknown = sorted(set(flat) - used)
        if unknown:
            e = ApiError("UnknownParameter", "The parameter %s is not recognized" % unknown[0])
            e.action = action
            raise e
        validate(params, op.input_shape)
        self.log({"service": "ec2", "action": action, "body": body.decode()})
        if action in self.deny:
            raise ApiError("UnauthorizedOperation", "You are not authorized to perform this operation. User: "
                           "arn:aws:iam::123456789012:user/test is not authorized to perform: ec2:%s. Encoded "
                           "authorization failure message: %s" % (action, "x" * 40), 403)
        fields = dict(flat)
        fields.update(self.derived(action, params))
        fault = self.fault_for(action, fields)
        if fault:
            raise ApiError(fault.get("code", "InternalError"), fault.get("message", "injected fault"),
                           fault.get("status", 400))
        fn = getattr(self, "op_" + action, None)
        if not fn:
            raise ApiError("InvalidAction", "the stand-in does not serve %s" % action)
        result = fn(params)
        h.send(200, xml_answer(action, op.output_shape, result), "text/xml;charset=UTF-8")

    def derived(self, action, params):
        if action != "RunInstances":
            return {}
        subnet = (params.get("NetworkInterfaces") or [{}])[0].get("SubnetId") or params.get("SubnetId")
        zone = next((self.region + z for z, s in self.subnets.items() if s == subnet), "")
        market = (params.get("InstanceMarketOptions") or {}).get("MarketType") or "on-demand"
        return {"AvailabilityZone": zone, "Market": market}

    def handle_json(self, h, body, service, target):
        if h.headers.get("Content-Type") != "application/x-amz-json-1.1":
            raise ApiError("SerializationException", "Content-Type must be application/x-amz-json-1.1")
        model = MODELS[service]
        prefix = {"ssm": "AmazonSSM.", "pricing": "AWSPriceListService."}[service]
        action = target[len(prefix):] if target.startswith(prefix) else ""
        if action not in model.operation_names:
            raise ApiError("UnknownOperationException", "unknown operation %s" % target)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise ApiError("SerializationException", "the body is not JSON")
        op = model.operation_model(action)
        validate(params, op.input_shape)
        self.log({"service": service, "action": action, "body": body.decode()})
        fault = self.fault_for(action, {k: v for k, v in params.items() if not isinstance(v, (list, dict))})
        if fault:
            raise ApiError(fault.get("code", "InternalServerError"), fault.get("message", "injected fault"),
                           fault.get("status", 400))
        result = getattr(self, "json_" + action)(params)
        validate_output = botocore.validate.ParamValidator().validate(result, op.output_shape)
        if validate_output.has_errors():
            raise RuntimeError("stand-in answer does not fit the model: " + validate_output.generate_report())
        h.send(200, json.dumps(result), "application/x-amz-json-1.1")

    # ---- SSM and Pricing ----

    def json_GetParameter(self, p):
        if p["Name"] != DLAMI_PARAMETER:
            raise ApiError("ParameterNotFound", "Parameter %s not found." % p["Name"])
        return {"Parameter": {"Name": p["Name"], "Type": "String", "Value": DLAMI_ID, "Version": 42,
                              "DataType": "aws:ec2:image",
                              "ARN": "arn:aws:ssm:%s::parameter%s" % (self.region, p["Name"])}}

    def json_GetProducts(self, p):
        if p.get("ServiceCode") != "AmazonEC2":
            return {"PriceList": [], "FormatVersion": "aws_v1"}
        want = {f["Field"]: f["Value"] for f in p.get("Filters", [])}
        itype = want.get("instanceType")
        if itype not in TYPES or want.get("regionCode", self.region) != self.region:
            return {"PriceList": [], "FormatVersion": "aws_v1"}
        sku = hashlib.sha1(itype.encode()).hexdigest()[:16].upper()
        product = {
            "product": {"productFamily": "Compute Instance", "sku": sku,
                        "attributes": {"instanceType": itype, "regionCode": self.region, "operatingSystem": "Linux",
                                       "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}},
            "serviceCode": "AmazonEC2",
            "terms": {"OnDemand": {sku + ".JRTCKXETXF": {"priceDimensions": {sku + ".JRTCKXETXF.6YS6EN2CT7": {
                "unit": "Hrs", "pricePerUnit": {"USD": "%.10f" % TYPES[itype][3]},
                "description": "$%.4f per On Demand Linux %s Instance Hour" % (TYPES[itype][3], itype)}}}}},
        }
        return {"FormatVersion": "aws_v1", "PriceList": [json.dumps(product)]}

    # ---- EC2 actions ----

    def _filters(self, params):
        return {f["Name"]: f.get("Values", []) for f in params.get("Filters", [])}

    def op_DescribeInstanceTypes(self, p):
        names = p.get("InstanceTypes") or list(TYPES)
        missing = [n for n in names if n not in TYPES]
        if missing:
            raise ApiError("InvalidInstanceType", "The following supplied instance types do not exist: [%s]" % ", ".join(missing))
        out = []
        for n in names:
            vcpus, mem, gpu, _ = TYPES[n]
            info = {"InstanceType": n, "CurrentGeneration": True, "SupportedUsageClasses": ["on-demand", "spot"],
                    "VCpuInfo": {"DefaultVCpus": vcpus}, "MemoryInfo": {"SizeInMiB": mem},
                    "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]}}
            if gpu:
                info["GpuInfo"] = {"Gpus": [{"Name": gpu[0], "Manufacturer": "NVIDIA", "Count": gpu[1],
                                             "MemoryInfo": {"SizeInMiB": gpu[2]}}], "TotalGpuMemoryInMiB": gpu[1] * gpu[2]}
            out.append(info)
        return {"InstanceTypes": out}

    def op_DescribeSpotPriceHistory(self, p):
        now = time.time()
        out = []
        for n in p.get("InstanceTypes") or list(TYPES):
            if n not in TYPES:
                continue
            for z in ZONES:
                zone = self.region + z
                if p.get("AvailabilityZone") and p["AvailabilityZone"] != zone:
                    continue
                out.append({"AvailabilityZone": zone, "InstanceType": n, "ProductDescription": "Linux/UNIX",
                            "SpotPrice": "%.6f" % (TYPES[n][3] * SPOT_FACTOR[z]), "Timestamp": now - 600})
        return {"SpotPriceHistory": out}

    def op_DescribeVpcs(self, p):
        f = self._filters(p)
        if "is-default" in f and f["is-default"] != ["true"]:
            return {"Vpcs": []}
        return {"Vpcs": [{"VpcId": self.vpc, "CidrBlock": "172.31.0.0/16", "IsDefault": True, "State": "available"}]}

    def op_DescribeSubnets(self, p):
        f = self._filters(p)
        out = []
        for i, (z, sid) in enumerate(sorted(self.subnets.items())):
            if p.get("SubnetIds") and sid not in p["SubnetIds"]:
                continue
            if "vpc-id" in f and self.vpc not in f["vpc-id"]:
                continue
            if "availability-zone" in f and self.region + z not in f["availability-zone"]:
                continue
            out.append({"SubnetId": sid, "VpcId": self.vpc, "AvailabilityZone": self.region + z, "DefaultForAz": True,
                        "MapPublicIpOnLaunch": True, "State": "available", "CidrBlock": "172.31.%d.0/20" % (16 * i),
                        "AvailableIpAddressCount": 4091})
        if p.get("SubnetIds") and len(out) != len(p["SubnetIds"]):
            raise ApiError("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist" % p["SubnetIds"][0])
        return {"Subnets": out}

    def op_DescribeSecurityGroups(self, p):
        f = self._filters(p)
        out = []
        for g in self.groups.values():
            if p.get("GroupIds") and g["GroupId"] not in p["GroupIds"]:
                continue
            if "group-name" in f and g["GroupName"] not in f["group-name"]:
                continue
            if "vpc-id" in f and g["VpcId"] not in f["vpc-id"]:
                continue
            out.append(g)
        return {"SecurityGroups": out}

    def op_CreateSecurityGroup(self, p):
        if any(g["GroupName"] == p["GroupName"] and g["VpcId"] == p.get("VpcId", self.vpc) for g in self.groups.values()):
            raise ApiError("InvalidGroup.Duplicate", "The security group '%s' already exists" % p["GroupName"])
        gid = "sg-0%016x" % (len(self.groups) + 1)
        tags = [t for s in p.get("TagSpecifications", []) for t in s.get("Tags", [])]
        self.groups[gid] = {"GroupId": gid, "GroupName": p["GroupName"], "Description": p["Description"],
                            "VpcId": p.get("VpcId", self.vpc), "IpPermissions": [], "Tags": tags}
        return {"GroupId": gid, "Tags": tags}

    def op_AuthorizeSecurityGroupIngress(self, p):
        g = self.groups.get(p.get("GroupId"))
        if not g:
            raise ApiError("InvalidGroup.NotFound", "The security group '%s' does not exist" % p.get("GroupId"))
        g["IpPermissions"].extend(p.get("IpPermissions", []))
        return {"Return": True}

    def op_DescribeKeyPairs(self, p):
        f = self._filters(p)
        names = p.get("KeyNames")
        for n in names or []:
            if n not in self.key_pairs:
                raise ApiError("InvalidKeyPair.NotFound", "The key pair '%s' does not exist" % n)
        out = [k["info"] for k in self.key_pairs.values()
               if (not names or k["info"]["KeyName"] in names) and ("key-name" not in f or k["info"]["KeyName"] in f["key-name"])]
        return {"KeyPairs": out}

    def op_ImportKeyPair(self, p):
        name = p["KeyName"]
        if name in self.key_pairs:
            raise ApiError("InvalidKeyPair.Duplicate", "The keypair already exists")
        line = p["PublicKeyMaterial"].decode().strip()
        if not re.match(r"^ssh-(ed25519|rsa) [A-Za-z0-9+/=]+", line):
            raise ApiError("InvalidKey.Format", "Key is not in valid OpenSSH public key format")
        fp = base64.b64encode(hashlib.sha256(base64.b64decode(line.split()[1])).digest()).decode().rstrip("=")
        info = {"KeyName": name, "KeyFingerprint": fp, "KeyPairId": "key-0%016x" % (len(self.key_pairs) + 1),
                "KeyType": line.split()[0][4:]}
        self.key_pairs[name] = {"info": info, "line": line}
        return {"KeyName": name, "KeyFingerprint": fp, "KeyPairId": info["KeyPairId"]}

    def op_DescribeImages(self, p):
        ids = p.get("ImageIds") or [DLAMI_ID]
        if any(i != DLAMI_ID for i in ids):
            raise ApiError("InvalidAMIID.NotFound", "The image id '[%s]' does not exist" % ids[0])
        return {"Images": [{"ImageId": DLAMI_ID, "Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)",
                            "Architecture": "x86_64", "RootDeviceName": "/dev/sda1", "RootDeviceType": "ebs",
                            "State": "available", "Public": True, "ImageType": "machine"}]}

    def op_RunInstances(self, p):
        token = p.get("ClientToken")
        if token and token in self.tokens:
            return self.reservations[self.tokens[token]]
        itype = p["InstanceType"]
        if itype not in TYPES:
            raise ApiError("InvalidParameterValue", "Invalid value '%s' for InstanceType." % itype)
        if p["ImageId"] != DLAMI_ID:
            raise ApiError("InvalidAMIID.NotFound", "The image id '[%s]' does not exist" % p["ImageId"])
        key = self.key_pairs.get(p.get("KeyName"))
        if not key:
            raise ApiError("InvalidKeyPair.NotFound", "The key pair '%s' does not exist" % p.get("KeyName"))
        nic = (p.get("NetworkInterfaces") or [{}])[0]
        subnet = nic.get("SubnetId") or p.get("SubnetId") or self.subnets["a"]
        zone = next((self.region + z for z, s in self.subnets.items() if s == subnet), None)
        if not zone:
            raise ApiError("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist" % subnet)
        groups = nic.get("Groups") or p.get("SecurityGroupIds") or []
        for g in groups:
            if g not in self.groups:
                raise ApiError("InvalidGroup.NotFound", "The security group '%s' does not exist" % g)
        if p["MinCount"] < 1 or p["MaxCount"] < p["MinCount"]:
            raise ApiError("InvalidParameterValue", "MinCount must be at least 1 and at most MaxCount")
        market = p.get("InstanceMarketOptions") or {}
        spot = market.get("MarketType") == "spot"
        if spot and (market.get("SpotOptions") or {}).get("InstanceInterruptionBehavior", "terminate") != "terminate":
            raise ApiError("InvalidParameterCombination", "one-time spot requests must terminate on interruption")
        user_data = base64.b64decode(p["UserData"]).decode() if p.get("UserData") else ""
        tags = [t for s in p.get("TagSpecifications", []) if s.get("ResourceType") == "instance" for t in s.get("Tags", [])]
        rid = "r-0%016x" % (len(self.reservations) + 1)
        instances = []
        for i in range(p["MaxCount"]):
            iid = "i-0%016x" % (len(self.order) + 1)
            rec = {"type": itype, "zone": zone, "subnet": subnet, "spot": spot, "tags": tags, "groups": groups,
                   "key_name": p["KeyName"], "reservation": rid, "launch_index": i,
                   "shutdown_behavior": p.get("InstanceInitiatedShutdownBehavior", "stop"), "user_data": user_data}
            self.launch(iid, key["line"], rec, user_data=user_data, login_as=["ubuntu"])
            self.describes[iid] = 0
            instances.append(iid)
        res = {"ReservationId": rid, "OwnerId": "123456789012", "Groups": [],
               "Instances": [self.instance_view(i, pending=True) for i in instances]}
        self.reservations[rid] = res
        if token:
            self.tokens[token] = rid
        return res

    def instance_view(self, iid, pending=False):
        inst = self.instances[iid]
        state = inst["state"]
        if pending or (state == "running" and self.describes.get(iid, 1) == 0):
            state = "pending"
        view = {"InstanceId": iid, "InstanceType": inst["type"], "ImageId": DLAMI_ID, "KeyName": inst["key_name"],
                "LaunchTime": inst["launched"], "AmiLaunchIndex": inst["launch_index"],
                "Placement": {"AvailabilityZone": inst["zone"], "Tenancy": "default"},
                "State": {"Code": STATE_CODES[state], "Name": state}, "SubnetId": inst["subnet"], "VpcId": self.vpc,
                "Architecture": "x86_64", "RootDeviceName": "/dev/sda1", "RootDeviceType": "ebs",
                "Tags": inst["tags"], "SecurityGroups": [{"GroupId": g, "GroupName": self.groups[g]["GroupName"]}
                                                         for g in inst["groups"] if g in self.groups]}
        if inst["spot"]:
            view["InstanceLifecycle"] = "spot"
            view["SpotInstanceRequestId"] = "sir-" + iid[2:10]
        if state in ("running", "stopping"):
            view["PublicIpAddress"] = inst["addr"]
            view["PrivateIpAddress"] = inst["addr"]
        if inst.get("reason") == "spot-interruption":
            view["StateReason"] = {"Code": "Server.SpotInstanceTermination",
                                   "Message": "Server.SpotInstanceTermination: Spot instance termination"}
            view["StateTransitionReason"] = "Server.SpotInstanceTermination"
        elif inst.get("reason") == "instance-initiated-shutdown":
            view["StateReason"] = {"Code": "Client.InstanceInitiatedShutdown",
                                   "Message": "Client.InstanceInitiatedShutdown: Instance initiated shutdown"}
        elif inst.get("reason") == "user":
            view["StateReason"] = {"Code": "Client.UserInitiatedShutdown",
                                   "Message": "Client.UserInitiatedShutdown: User initiated shutdown"}
        return view

    def op_DescribeInstances(self, p):
        f = self._filters(p)
        ids = p.get("InstanceIds")
        for i in ids or []:
            if i not in self.instances:
                raise ApiError("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist" % i)
        for name in f:
            if name not in ("instance-id", "instance-state-name", "tag-key") and not name.startswith("tag:"):
                raise ApiError("InvalidParameterValue", "The filter '%s' is invalid" % name)
        by_res = {}
        for iid in self.order:
            inst = self.instances[iid]
            if ids and iid not in ids:
                continue
            tags = {t["Key"]: t["Value"] for t in inst["tags"]}
            if "instance-id" in f and iid not in f["instance-id"]:
                continue
            if "instance-state-name" in f and inst["state"] not in f["instance-state-name"]:
                continue
            if "tag-key" in f and not any(k in tags for k in f["tag-key"]):
                continue
            if any(n.startswith("tag:") and tags.get(n[4:]) not in v for n, v in f.items()):
                continue
            view = self.instance_view(iid)
            self.describes[iid] = self.describes.get(iid, 0) + 1
            by_res.setdefault(inst["reservation"], []).append(view)
        return {"Reservations": [{"ReservationId": r, "OwnerId": "123456789012", "Instances": v}
                                 for r, v in by_res.items()]}

    def op_TerminateInstances(self, p):
        out = []
        for iid in p["InstanceIds"]:
            inst = self.instances.get(iid)
            if not inst:
                raise ApiError("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist" % iid)
            before = inst["state"]
            if before != "terminated":
                self.end(iid, "terminated", "user")
            out.append({"InstanceId": iid, "PreviousState": {"Code": STATE_CODES[before], "Name": before},
                        "CurrentState": {"Code": 32 if before != "terminated" else 48,
                                         "Name": "shutting-down" if before != "terminated" else "terminated"}})
        return {"TerminatingInstances": out}

    def on_shutdown(self, inst):
        if inst.get("shutdown_behavior") == "terminate":
            self.end(inst["id"], "terminated", "instance-initiated-shutdown")
        else:
            self.end(inst["id"], "stopped", "instance-initiated-shutdown")


if __name__ == "__main__":
    cloud_standin.run(Ec2, __doc__, extra=[
        (("--credentials",), {"required": True}), (("--region",), {"default": "us-east-1"}), (("--deny",), {"default": ""})])
