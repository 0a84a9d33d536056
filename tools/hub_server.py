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

Every request is appended to --log, before it is answered, as one tab-separated line: method, path,
query, Range header, "auth" when an Authorization header came (never its value); "-" for none.

A fault in faults.json, [{"id": "x", "match": "<substring of the path>", "method": "GET",
"drop_after": N, "times": 1, "hang": false, "status": 503, "ignore_range": false,
"body_repeat": "[]", "times_repeat": N}], fires `times` times per id, the first unspent one in list
order: it drops the connection after N bytes of body (or, with hang, stops sending and keeps the
connection open), answers `status`, answers a Range request with the whole file (200) as some CDNs
do, or answers 200 with body_repeat's first character N times then its second N times (a hostile
JSON reply such as "[[[...]]]").

    tools/hub_server.py --root DIR --port-file F --log F [--token T] [--page-size N] [--watch-pid PID]
"""

import argparse
import hashlib
import json
import os
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
