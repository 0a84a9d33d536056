#!/usr/bin/env python3
"""A loopback stand-in for the Hugging Face Hub, for tests (standard library only).

Serves a hub-shaped folder:

    ROOT/models/<repo_id>/refs/<branch>          text: the commit the branch points at
    ROOT/models/<repo_id>/commits/<sha>/<path>   the files of each commit (a full tree)
    ROOT/models/<repo_id>/gated                  present: requests need "Authorization: Bearer <--token>"
    ROOT/models/<repo_id>/moved_to               text: new repo id; resolve answers a relative 307 there
    ROOT/datasets/<repo_id>/...                  the same for dataset repos
    ROOT/faults.json                             optional, re-read on each request (see Fault below)

It answers as huggingface.co does (as huggingface_hub's file_download.py expects):
  HEAD/GET /<repo>/resolve/<rev>/<path>, /datasets/<repo>/resolve/...: X-Repo-Commit, ETag (git blob
    sha1) for small files; for LFS files (by extension or size) a 302 to a CDN-like URL on another
    host name (localhost instead of 127.0.0.1) with X-Linked-Etag (sha256) and X-Linked-Size.
  GET /cdn/<sha256>: the blob, with Range requests (206) and no authentication.
  GET /api/{models,datasets}/<repo>[/revision/<rev>]: repo info with sha and siblings.
  GET /api/{models,datasets}/<repo>/tree/<rev>[/<path>]?recursive=true: listing, paginated with a
    Link header (--page-size; --page-link-host other: the Link names the other host name).
  Errors carry X-Error-Code: RepoNotFound (401 without a token, 404 with one), RevisionNotFound,
  EntryNotFound (404, with X-Repo-Commit), GatedRepo (401 without a token, 403 with a wrong one).

Writes, as the Hub takes them (huggingface_hub's hf_api.py, _commit_api.py and lfs.py), all needing
"Authorization: Bearer <--token>":
  GET /api/whoami-v2: the account ("loopback-user").
  POST /api/repos/create {name, organization, private, type}: a repo whose first commit holds
    .gitattributes; 409 when it exists.
  POST /api/{models,datasets}/<repo>/preupload/<rev> {files: [{path, sample, size, sha}]}: uploadMode
    "lfs" for LFS files (by extension or size, as downloads decide), else "regular".
  POST /[datasets/]<repo>.git/info/lfs/objects/batch: no actions for a blob already held; else a
    basic upload URL on the other host name, or, above --lfs-chunk-size, a multipart upload (header
    chunk_size and one URL per part, then a completion POST); a verify action. The storage URLs
    refuse requests that carry an Authorization header (pre-signed URLs get no token).
  POST /api/{models,datasets}/<repo>/commit/<rev> (NDJSON: header, file (base64), lfsFile,
    deletedFile, deletedFolder): a new commit on the branch, the parent's files with the operations
    applied; 412 when parentCommit is not the head; 422 for an lfsFile whose blob was not uploaded.

Every request is appended to --log, before it is answered, as one tab-separated line: method, path,
query, Range header, "auth" when an Authorization header came (never its value); "-" for none.

A fault in faults.json, [{"id": "x", "match": "<substring of the path>", "method": "GET",
"drop_after": N, "times": 1, "hang": false, "status": 503, "ignore_range": false,
"body_repeat": "[]", "times_repeat": N}], fires `times` times per id, the first unspent one in list
order: it drops the connection after N bytes of body (or, with hang, stops sending and keeps the
connection open), answers `status`, answers a Range request with the whole file (200) as some CDNs
do, or answers 200 with body_repeat's first character N times then its second N times (a hostile
JSON reply such as "[[[...]]]").

    tools/hub_server.py --root DIR --port-file F --log F [--token T] [--page-size N] [--lfs-chunk-size N]
                        [--watch-pid PID]
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_EXTENSIONS = (".safetensors", ".parquet", ".bin", ".arrow", ".gguf", ".h5", ".msgpack", ".pt", ".zip")


class Hub:
    def __init__(self, args):
        self.root = os.path.abspath(args.root)
        self.token = args.token
        self.page_size = args.page_size
        self.page_link_host = args.page_link_host
        self.lfs_threshold = args.lfs_threshold
        self.lfs_chunk_size = args.lfs_chunk_size
        self.commit_lock = threading.Lock()
        self.log_path = args.log
        self.log_lock = threading.Lock()
        self.fault_lock = threading.Lock()
        self.fault_fired = {}
        self.hash_cache = {}
        self.port = 0

    # ---- repository folder ---------------------------------------------------------------------

    def repo_dir(self, kind, repo_id):
        d = os.path.join(self.root, kind, *repo_id.split("/"))
        if os.path.isdir(os.path.join(d, "commits")) or os.path.isfile(os.path.join(d, "moved_to")):
            return d
        return None

    def resolve_revision(self, repo_dir, rev):
        commits = os.path.join(repo_dir, "commits")
        if len(rev) == 40 and os.path.isdir(os.path.join(commits, rev)):
            return rev
        ref = os.path.join(repo_dir, "refs", *rev.split("/"))
        if ".." not in rev.split("/") and os.path.isfile(ref):
            with open(ref) as f:
                sha = f.read().strip()
            if os.path.isdir(os.path.join(commits, sha)):
                return sha
        return None

    def file_info(self, path):
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        info = self.hash_cache.get(key)
        if info is None:
            with open(path, "rb") as f:
                data = f.read()
            sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            sha256 = hashlib.sha256(data).hexdigest()
            lfs = path.endswith(LFS_EXTENSIONS) or len(data) >= self.lfs_threshold
            info = {"size": len(data), "sha1": sha1, "sha256": sha256, "lfs": lfs}
            self.hash_cache[key] = info
        return info

    def find_blob(self, sha256):
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                p = os.path.join(dirpath, name)
                if os.sep + "commits" + os.sep in p and self.file_info(p)["sha256"] == sha256:
                    return p
        return None

    def list_files(self, commit_dir):
        out = []
        for dirpath, _, files in os.walk(commit_dir):
            for name in files:
                full = os.path.join(dirpath, name)
                out.append(os.path.relpath(full, commit_dir).replace(os.sep, "/"))
        return sorted(out)

    # ---- faults and log ---------------------------------------------------------------------------

    def take_fault(self, method, path):
        fpath = os.path.join(self.root, "faults.json")
        try:
            with open(fpath) as f:
                faults = json.load(f)
        except (OSError, ValueError):
            return None
        with self.fault_lock:
            for fault in faults:
                if fault.get("method", method) != method or fault.get("match", "") not in path:
                    continue
                fid = fault.get("id", fault.get("match", ""))
                if self.fault_fired.get(fid, 0) >= fault.get("times", 1):
                    continue
                self.fault_fired[fid] = self.fault_fired.get(fid, 0) + 1
                return fault
        return None

    def log(self, fields):
        if not self.log_path:
            return
        with self.log_lock, open(self.log_path, "a") as f:
            f.write("\t".join(fields) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-loopback/1"
    hub = None  # set in main

    def log_message(self, fmt, *args):
        pass

    # ---- plumbing --------------------------------------------------------------------------------

    def send(self, status, headers=None, body=b"", head=False, fault=None):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head or not body:
            return
        if fault and "drop_after" in fault:
            n = int(fault["drop_after"])
            self.wfile.write(body[:n])
            self.wfile.flush()
            if fault.get("hang"):
                time.sleep(float(fault.get("hang_seconds", 60)))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def send_json(self, status, obj, extra=None, head=False):
        headers = {"Content-Type": "application/json"}
        headers.update(extra or {})
        self.send(status, headers, json.dumps(obj).encode(), head=head)

    def error(self, status, code, message, extra=None, head=False):
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        headers.update(extra or {})
        self.send_json(status, {"error": message}, headers, head=head)

    def auth_state(self):
        h = self.headers.get("Authorization")
        if h is None:
            return "none"
        return "ok" if self.hub.token and h == "Bearer " + self.hub.token else "bad"

    # A repo's access check: None when the request may go on.
    def check_repo(self, kind, repo_id, head):
        d = self.hub.repo_dir(kind, repo_id)
        auth = self.auth_state()
        if d is None:
            if auth == "none":
                self.error(401, "RepoNotFound", "Invalid username or password.", head=head)
            else:
                self.error(404, "RepoNotFound", "Repository not found", head=head)
            return None, False
        if os.path.isfile(os.path.join(d, "gated")) and auth != "ok":
            label = "model" if kind == "models" else "dataset"
            if auth == "none":
                self.error(401, "GatedRepo", "Access to %s %s is restricted. You must have access to it and be "
                           "authenticated to access it. Please log in." % (label, repo_id), head=head)
            else:
                self.error(403, "GatedRepo", "Access to %s %s is restricted and you are not in the authorized list. "
                           "Visit %s/%s to ask for access." % (label, repo_id, self.base(), repo_id), head=head)
            return None, False
        return d, True

    def base(self):
        return "http://127.0.0.1:%d" % self.hub.port

    def cdn_base(self):
        return "http://localhost:%d" % self.hub.port

    def parse_range(self, size):
        r = self.headers.get("Range")
        if not r or not r.startswith("bytes="):
            return None
        spec = r[len("bytes="):]
        if "," in spec:
            return None
        start_s, _, end_s = spec.partition("-")
        if start_s == "":
            return None
        start = int(start_s)
        end = int(end_s) if end_s else size - 1
        return start, min(end, size - 1)

    def serve_bytes(self, data, headers, head, fault):
        size = len(data)
        headers = dict(headers)
        headers["Accept-Ranges"] = "bytes"
        rng = None if fault and fault.get("ignore_range") else self.parse_range(size)
        if rng is not None:
            start, end = rng
            if start >= size:
                self.send(416, {"Content-Range": "bytes */%d" % size}, head=head)
                return
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
            body = data[start:end + 1]
            headers["Content-Length"] = str(len(body))
            self.send(206, headers, body, head=head, fault=fault)
            return
        headers["Content-Length"] = str(size)
        self.send(200, headers, data, head=head, fault=fault)

    # ---- routes ---------------------------------------------------------------------------------------

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def route(self, head):
        url = urlsplit(self.path)
        raw = url.path
        segs = [unquote(s) for s in raw.split("/")[1:]]
        method = "HEAD" if head else "GET"
        # Logged before answering: a client that got its answer finds its request in the log.
        self.hub.log([method, raw, url.query or "-", self.headers.get("Range") or "-",
                      "auth" if self.headers.get("Authorization") is not None else "-"])
        fault = self.hub.take_fault(method, raw)
        if fault and "status" in fault:
            self.error(int(fault["status"]), "Injected", "injected failure", head=head)
        elif fault and "body_repeat" in fault:
            body = fault["body_repeat"][0] * int(fault["times_repeat"]) + fault["body_repeat"][1] * int(fault["times_repeat"])
            self.send(200, {"Content-Type": "application/json"}, body.encode(), head=head)
        elif segs and segs[0] == "cdn":
            self.route_cdn(segs[1:], head, fault)
        elif segs and segs[0] == "api":
            self.route_api(segs[1:], parse_qs(url.query), head)
        elif "resolve" in segs:
            self.route_resolve(segs, head, fault)
        else:
            self.send_json(404, {"error": "no such route"}, head=head)

    def route_resolve(self, segs, head, fault):
        i = segs.index("resolve")
        kind = "models"
        repo_segs = segs[:i]
        if repo_segs and repo_segs[0] == "datasets":
            kind, repo_segs = "datasets", repo_segs[1:]
        repo_id = "/".join(repo_segs)
        if len(segs) < i + 3:
            self.send_json(400, {"error": "bad resolve URL"}, head=head)
            return
        rev, filename = segs[i + 1], "/".join(segs[i + 2:])
        d, ok = self.check_repo(kind, repo_id, head)
        if not ok:
            return
        moved = os.path.join(d, "moved_to")
        if os.path.isfile(moved):
            with open(moved) as f:
                new_id = f.read().strip()
            prefix = "/datasets/" if kind == "datasets" else "/"
            loc = prefix + new_id + "/resolve/" + quote(rev, safe="") + "/" + quote(filename)
            self.send(307, {"Location": loc}, head=head)
            return
        commit = self.hub.resolve_revision(d, rev)
        if commit is None:
            self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head=head)
            return
        path = os.path.join(d, "commits", commit, *filename.split("/"))
        if ".." in filename.split("/") or not os.path.isfile(path):
            self.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit}, head=head)
            return
        info = self.hub.file_info(path)
        if info["lfs"]:
            headers = {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": '"%s"' % info["sha256"],
                "X-Linked-Size": str(info["size"]),
                "ETag": '"%s"' % hashlib.sha1(info["sha256"].encode()).hexdigest(),
                "Location": "%s/cdn/%s?repo=%s" % (self.cdn_base(), info["sha256"], quote(repo_id, safe="")),
            }
            self.send(302, headers, head=head)
            return
        with open(path, "rb") as f:
            data = f.read()
        headers = {"X-Repo-Commit": commit, "ETag": '"%s"' % info["sha1"], "Content-Type": "application/octet-stream"}
        self.serve_bytes(data, headers, head, fault)

    def route_cdn(self, segs, head, fault):
        sha = segs[0] if segs else ""
        path = self.hub.find_blob(sha) if len(sha) == 64 else None
        if path is None:
            self.send_json(404, {"error": "no such blob"}, head=head)
            return
        with open(path, "rb") as f:
            data = f.read()
        self.serve_bytes(data, {"ETag": '"%s"' % sha, "Content-Type": "application/octet-stream"}, head, fault)

    def route_api(self, segs, query, head):
        if segs == ["whoami-v2"]:
            if self.auth_state() != "ok":
                self.error(401, "Unauthorized", "Invalid credentials in Authorization header", head=head)
                return
            self.send_json(200, {"type": "user", "name": "loopback-user", "fullname": "Loopback User", "orgs": [],
                                 "auth": {"type": "access_token", "accessToken": {"role": "write"}}}, head=head)
            return
        if not segs or segs[0] not in ("models", "datasets"):
            self.send_json(404, {"error": "no such route"}, head=head)
            return
        kind = segs[0]
        rest = segs[1:]
        op, op_at = None, len(rest)
        for j, s in enumerate(rest):
            if s in ("revision", "tree") and j >= 1:
                op, op_at = s, j
                break
        repo_id = "/".join(rest[:op_at])
        d, ok = self.check_repo(kind, repo_id, head)
        if not ok:
            return
        args = rest[op_at + 1:]
        rev = args[0] if args else "main"
        commit = self.hub.resolve_revision(d, rev)
        if commit is None:
            self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head=head)
            return
        commit_dir = os.path.join(d, "commits", commit)
        files = self.hub.list_files(commit_dir)
        if op in (None, "revision"):
            gated = os.path.isfile(os.path.join(d, "gated"))
            self.send_json(200, {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                                 "sha": commit, "private": False, "gated": "manual" if gated else False,
                                 "siblings": [{"rfilename": p} for p in files]}, head=head)
            return
        sub = "/".join(args[1:])
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries = self.tree_entries(commit_dir, files, sub, recursive)
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor:cursor + self.hub.page_size]
        extra = {}
        if cursor + self.hub.page_size < len(entries):
            q = "recursive=%s&expand=false&cursor=%d" % ("true" if recursive else "false", cursor + self.hub.page_size)
            base = self.cdn_base() if self.hub.page_link_host == "other" else self.base()
            extra["Link"] = '<%s%s?%s>; rel="next"' % (base, quote(urlsplit(self.path).path, safe="/%"), q)
        self.send_json(200, page, extra, head=head)

    # ---- writes --------------------------------------------------------------------------------------

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_POST(self):
        self.write_route("POST")

    def do_PUT(self):
        self.write_route("PUT")

    def write_route(self, method):
        url = urlsplit(self.path)
        raw = url.path
        segs = [unquote(s) for s in raw.split("/")[1:]]
        self.hub.log([method, raw, url.query or "-", "-",
                      "auth" if self.headers.get("Authorization") is not None else "-"])
        body = self.read_body()
        fault = self.hub.take_fault(method, raw)
        if fault and "status" in fault:
            self.error(int(fault["status"]), "Injected", "injected failure")
            return
        if segs and segs[0] == "lfs-storage":
            self.route_storage(method, segs[1:], body)
            return
        if self.auth_state() != "ok":
            self.error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return
        if method == "POST" and segs[:3] == ["api", "repos", "create"]:
            self.create_repo(body)
        elif method == "POST" and len(segs) >= 3 and segs[0] == "api" and segs[1] in ("models", "datasets") and \
                ("preupload" in segs or "commit" in segs):
            op = "preupload" if "preupload" in segs else "commit"
            j = segs.index(op)
            repo_id, rev = "/".join(segs[2:j]), "/".join(segs[j + 1:]) or "main"
            d = self.hub.repo_dir(segs[1], repo_id)
            if d is None:
                self.error(404, "RepoNotFound", "Repository not found")
            elif op == "preupload":
                self.preupload(d, rev, body)
            else:
                self.commit(segs[1], repo_id, d, rev, body)
        elif method == "POST" and raw.endswith(".git/info/lfs/objects/batch"):
            rsegs = segs[:-4]
            kind = "models"
            if rsegs and rsegs[0] == "datasets":
                kind, rsegs = "datasets", rsegs[1:]
            repo_id = "/".join(rsegs)[:-len(".git")]
            if self.hub.repo_dir(kind, repo_id) is None:
                self.error(404, "RepoNotFound", "Repository not found")
            else:
                self.lfs_batch(body)
        elif method == "POST" and segs and segs[0] == "lfs-verify":
            req = json.loads(body)
            path = self.lfs_path(segs[1] if len(segs) > 1 else "")
            if path and os.path.isfile(path) and os.path.getsize(path) == req.get("size") and req.get("oid") == segs[1]:
                self.send_json(200, {"success": True})
            else:
                self.error(404, "LfsNotFound", "object not uploaded")
        else:
            self.send_json(404, {"error": "no such route"})

    def lfs_path(self, oid):
        if len(oid) != 64 or any(c not in "0123456789abcdef" for c in oid):
            return None
        return os.path.join(self.hub.root, "lfs", oid)

    def create_repo(self, body):
        req = json.loads(body)
        name, org = req.get("name"), req.get("organization")
        repo_id = "%s/%s" % (org, name) if org else name
        kind = "datasets" if req.get("type") == "dataset" else "models"
        prefix = "datasets/" if kind == "datasets" else ""
        url = "%s/%s%s" % (self.base(), prefix, repo_id)
        with self.hub.commit_lock:
            if self.hub.repo_dir(kind, repo_id) is not None:
                self.send_json(409, {"error": "You already created this %s repo" % kind[:-1], "url": url},
                               {"X-Error-Message": "You already created this %s repo" % kind[:-1]})
                return
            d = os.path.join(self.hub.root, kind, *repo_id.split("/"))
            sha = hashlib.sha1(("initial " + repo_id + str(time.time())).encode()).hexdigest()
            os.makedirs(os.path.join(d, "commits", sha))
            with open(os.path.join(d, "commits", sha, ".gitattributes"), "w") as f:
                f.write("".join("*%s filter=lfs diff=lfs merge=lfs -text\n" % e for e in LFS_EXTENSIONS))
            os.makedirs(os.path.join(d, "refs"), exist_ok=True)
            with open(os.path.join(d, "refs", "main"), "w") as f:
                f.write(sha)
            if req.get("private"):
                open(os.path.join(d, "gated"), "w").close()
        self.send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def preupload(self, d, rev, body):
        if self.hub.resolve_revision(d, rev) is None:
            self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
            return
        out = []
        for f in json.loads(body)["files"]:
            base64.b64decode(f["sample"], validate=True)
            lfs = f["path"].endswith(LFS_EXTENSIONS) or int(f["size"]) >= self.hub.lfs_threshold
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self.send_json(200, {"files": out})

    def lfs_batch(self, body):
        req = json.loads(body)
        if req.get("operation") != "upload" or req.get("hash_algo", "sha256") != "sha256":
            self.send_json(422, {"message": "only sha256 uploads"})
            return
        chunk = self.hub.lfs_chunk_size
        objects, multipart = [], False
        for o in req["objects"]:
            oid, size = o["oid"], int(o["size"])
            path = self.lfs_path(oid)
            if path is None:
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid"}})
                continue
            if os.path.isfile(path):
                objects.append({"oid": oid, "size": size})
                continue
            up = "%s/lfs-storage/%s?size=%d" % (self.cdn_base(), oid, size)
            actions = {"verify": {"href": "%s/lfs-verify/%s" % (self.base(), oid)}}
            if size > chunk and "multipart" in req.get("transfers", []):
                multipart = True
                header = {"chunk_size": str(chunk)}
                for i in range((size + chunk - 1) // chunk):
                    header[str(i + 1)] = "%s/lfs-storage/%s/part/%d" % (self.cdn_base(), oid, i + 1)
                actions["upload"] = {"href": up, "header": header}
            else:
                actions["upload"] = {"href": up}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        self.send(200, {"Content-Type": "application/vnd.git-lfs+json"},
                  json.dumps({"transfer": "multipart" if multipart else "basic", "objects": objects,
                              "hash_algo": "sha256"}).encode())

    def route_storage(self, method, segs, body):
        # Pre-signed storage URLs: a request carrying a token is refused (it must never go there).
        if self.headers.get("Authorization") is not None:
            self.send_json(400, {"error": "storage URLs are pre-signed: no Authorization header"})
            return
        path = self.lfs_path(segs[0] if segs else "")
        if path is None:
            self.send_json(404, {"error": "no such object"})
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if method == "PUT" and len(segs) == 3 and segs[1] == "part":
            part = "%s.part%d" % (path, int(segs[2]))
            with open(part, "wb") as f:
                f.write(body)
            self.send(200, {"ETag": '"%s"' % hashlib.md5(body).hexdigest()})
        elif method == "PUT" and len(segs) == 1:
            self.store_blob(path, segs[0], body)
        elif method == "POST" and len(segs) == 1:
            req = json.loads(body)
            data = b""
            for i, p in enumerate(req["parts"]):
                part = "%s.part%d" % (path, i + 1)
                if p["partNumber"] != i + 1 or not os.path.isfile(part):
                    self.send_json(400, {"error": "part %d missing" % (i + 1)})
                    return
                with open(part, "rb") as f:
                    chunk = f.read()
                if p["etag"] != '"%s"' % hashlib.md5(chunk).hexdigest():
                    self.send_json(400, {"error": "part %d: etag mismatch" % (i + 1)})
                    return
                data += chunk
            for i in range(len(req["parts"])):
                os.remove("%s.part%d" % (path, i + 1))
            self.store_blob(path, segs[0], data)
        else:
            self.send_json(404, {"error": "no such route"})

    def store_blob(self, path, oid, data):
        if hashlib.sha256(data).hexdigest() != oid:
            self.send_json(400, {"error": "content does not match oid %s" % oid})
            return
        tmp = path + ".tmp%d" % threading.get_ident()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        self.send(200, {})

    def commit(self, kind, repo_id, d, rev, body):
        if self.headers.get("Content-Type", "").split(";")[0] != "application/x-ndjson":
            self.send_json(400, {"error": "commits are NDJSON"})
            return
        lines = [json.loads(l) for l in body.decode().splitlines() if l.strip()]
        if not lines or lines[0].get("key") != "header":
            self.send_json(400, {"error": "the first line must be the header"})
            return
        header = lines[0]["value"]
        with self.hub.commit_lock:
            parent = self.hub.resolve_revision(d, rev)
            if parent is None:
                self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
                return
            if header.get("parentCommit") and header["parentCommit"] != parent:
                self.send_json(412, {"error": "A commit has happened since. Please refresh and try again."})
                return
            ops_digest = hashlib.sha1(body + parent.encode() + str(time.time()).encode()).hexdigest()
            staging = os.path.join(d, "staging-" + ops_digest)
            shutil.copytree(os.path.join(d, "commits", parent), staging)
            try:
                for line in lines[1:]:
                    key, v = line["key"], line["value"]
                    p = v["path"].strip("/")
                    if ".." in p.split("/") or p == "":
                        raise ValueError("bad path %r" % v["path"])
                    dest = os.path.join(staging, *p.split("/"))
                    if key == "file":
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        with open(dest, "wb") as f:
                            f.write(base64.b64decode(v["content"], validate=True))
                    elif key == "lfsFile":
                        src = self.lfs_path(v["oid"])
                        if src is None or not os.path.isfile(src):
                            raise LookupError("LFS file %s (%s) was not uploaded" % (p, v["oid"]))
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        shutil.copyfile(src, dest)
                    elif key == "deletedFile":
                        if not os.path.isfile(dest):
                            raise FileNotFoundError("file %s not found" % p)
                        os.remove(dest)
                    elif key == "deletedFolder":
                        shutil.rmtree(dest)
                    else:
                        raise ValueError("unknown key %r" % key)
            except LookupError as e:
                shutil.rmtree(staging)
                self.send_json(422, {"error": str(e)}, {"X-Error-Message": str(e)})
                return
            except (ValueError, OSError) as e:
                shutil.rmtree(staging)
                self.send_json(400, {"error": str(e)}, {"X-Error-Message": str(e)})
                return
            os.replace(staging, os.path.join(d, "commits", ops_digest))
            ref = os.path.join(d, "refs", *rev.split("/"))
            if len(rev) != 40:
                with open(ref + ".tmp", "w") as f:
                    f.write(ops_digest)
                os.replace(ref + ".tmp", ref)
        prefix = "datasets/" if kind == "datasets" else ""
        self.send_json(200, {"success": True, "commitOid": ops_digest,
                             "commitUrl": "%s/%s%s/commit/%s" % (self.base(), prefix, repo_id, ops_digest)})

    def tree_entries(self, commit_dir, files, sub, recursive):
        prefix = sub + "/" if sub else ""
        dirs, out = set(), []
        for p in files:
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):]
            parts = rel.split("/")
            for k in range(1, len(parts)):
                if recursive or k == 1:
                    dirs.add(prefix + "/".join(parts[:k]))
            if not recursive and len(parts) > 1:
                continue
            info = self.hub.file_info(os.path.join(commit_dir, *p.split("/")))
            e = {"type": "file", "oid": info["sha1"], "size": info["size"], "path": p}
            if info["lfs"]:
                e["lfs"] = {"oid": info["sha256"], "size": info["size"], "pointerSize": 134}
            out.append(e)
        for dpath in dirs:
            out.append({"type": "directory", "oid": hashlib.sha1(dpath.encode()).hexdigest(), "size": 0, "path": dpath})
        out.sort(key=lambda e: e["path"])
        return out


def watch(pid):
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    ap.add_argument("--token", default="")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--page-link-host", choices=["same", "other"], default="same",
                    help="other: next-page Links name another host (localhost), as a hostile Hub could")
    ap.add_argument("--lfs-threshold", type=int, default=10 * 1024 * 1024)
    ap.add_argument("--lfs-chunk-size", type=int, default=64 * 1024 * 1024,
                    help="LFS uploads larger than this are multipart, in parts of this size")
    ap.add_argument("--watch-pid", type=int, default=0, help="exit when this process is gone")
    args = ap.parse_args()

    hub = Hub(args)
    Handler.hub = hub
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    hub.port = server.server_address[1]
    if args.watch_pid:
        threading.Thread(target=watch, args=(args.watch_pid,), daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(hub.port))
        os.replace(tmp, args.port_file)
    else:
        print(hub.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
