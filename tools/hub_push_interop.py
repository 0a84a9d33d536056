#!/usr/bin/env python3
"""Checks pushes both ways between skyrun and Python's huggingface_hub through the Hub stand-in.

Needs huggingface_hub importable (the GPU machine has it with transformers) and a built skyrun.
Starts tools/hub_server.py on loopback (LFS from 4 KB, multipart above 6 KB), then:
  1. skyrun's upload_folder pushes a folder (regular, LFS and multipart LFS files, a subfolder);
     Python's snapshot_download gets it back byte-identical.
  2. Python's upload_folder pushes a folder; skyrun's snapshot_download gets it back byte-identical
     (the stand-in takes huggingface_hub's own commit requests).

    python3 tools/hub_push_interop.py --skyrun build/skyrun

Prints one line per check and "N passed, N failed"; exits 1 on any failure. The token is a test
value given to the stand-in; it is passed in the environment, never on a command line.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "hf_loopbackPUSHinterop0123456789abcdef"

results = {"passed": 0, "failed": 0}


def check(ok, what, detail=""):
    results["passed" if ok else "failed"] += 1
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok and detail:
        print("     " + detail.replace("\n", "\n     "))


def folder_files(seed):
    def pseudo(n, s):
        out, x = bytearray(), s * 2654435761 % (1 << 32)
        for _ in range(n):
            x = (x * 1103515245 + 12345) % (1 << 31)
            out.append(x >> 16 & 255)
        return bytes(out)
    return {
        "config.json": b'{"model_type": "llama", "seed": %d}\n' % seed,
        "model.safetensors": pseudo(20000, seed),  # LFS, multipart (4 parts)
        "big.txt": pseudo(5000, seed + 1),          # LFS by size, one PUT
        "nested/notes.md": b"# notes %d\n" % seed,
        "empty.txt": b"",
    }


def write_folder(d, files):
    for path, data in files.items():
        full = os.path.join(d, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def read_tree(d):
    out = {}
    for dirpath, _, names in os.walk(d):
        for n in names:
            full = os.path.join(dirpath, n)
            with open(full, "rb") as f:
                out[os.path.relpath(full, d).replace(os.sep, "/")] = f.read()
    return out


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    e.update(extra)
    return e


def run(cmd, e, stdin=None):
    p = subprocess.run(cmd, env=e, input=stdin, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


LUA_PUSH = """
local hf = require "huggingface_hub"
hf.create_repo("me/from-skyrun", { exist_ok = true })
local info = hf.upload_folder { folder_path = %r, repo_id = "me/from-skyrun", commit_message = "from skyrun" }
print(info.oid)
"""

LUA_PULL = """
print(require("huggingface_hub").snapshot_download("me/from-python"))
"""

PY_PULL = """
from huggingface_hub import snapshot_download
print(snapshot_download("me/from-skyrun"))
"""

PY_PUSH = """
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("me/from-python", exist_ok=True)
info = api.upload_folder(folder_path=sys.argv[1], repo_id="me/from-python", commit_message="from python")
print(info.oid)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skyrun", default=os.path.join(HERE, "..", "build", "skyrun"))
    args = ap.parse_args()
    skyrun = os.path.abspath(args.skyrun)
    try:
        import huggingface_hub
    except ImportError:
        print("huggingface_hub is not importable here: run this on a machine that has it")
        return 2
    print("huggingface_hub %s, skyrun %s" % (huggingface_hub.__version__, skyrun))

    tmp = tempfile.mkdtemp(prefix="hub_push_interop_")
    root = os.path.join(tmp, "hub")
    os.makedirs(root)
    port_file = os.path.join(tmp, "port")
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "hub_server.py"), "--root", root,
                               "--port-file", port_file, "--log", os.path.join(tmp, "requests.log"),
                               "--token", TOKEN, "--lfs-threshold", "4096", "--lfs-chunk-size", "6000",
                               "--watch-pid", str(os.getpid())])
    try:
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        with open(port_file) as f:
            endpoint = "http://127.0.0.1:" + f.read().strip()
        # The stand-in speaks LFS, not Xet: huggingface_hub must not try Xet storage.
        common = dict(HF_ENDPOINT=endpoint, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")

        # 1. skyrun pushes, Python downloads.
        src = os.path.join(tmp, "sky_src")
        files = folder_files(1)
        write_folder(src, files)
        rc, out, err = run([skyrun, "-"], env(HF_HOME=os.path.join(tmp, "home_s1"), **common), stdin=LUA_PUSH % src)
        check(rc == 0, "skyrun's upload_folder pushes to the stand-in", out + err)
        rc, out, err = run([sys.executable, "-c", PY_PULL], env(HF_HOME=os.path.join(tmp, "home_p1"), **common))
        check(rc == 0, "huggingface_hub's snapshot_download fetches skyrun's commit", err)
        if rc == 0:
            got = read_tree(out.strip().splitlines()[-1])
            got.pop(".gitattributes", None)
            check(got == files, "huggingface_hub gets skyrun's push byte-identical",
                  "differs: %s" % sorted(k for k in set(got) | set(files) if got.get(k) != files.get(k)))

        # 2. Python pushes, skyrun downloads.
        src2 = os.path.join(tmp, "py_src")
        files2 = folder_files(2)
        write_folder(src2, files2)
        rc, out, err = run([sys.executable, "-c", PY_PUSH, src2], env(HF_HOME=os.path.join(tmp, "home_p2"), **common))
        check(rc == 0, "huggingface_hub's upload_folder pushes to the stand-in", err)
        rc, out, err = run([skyrun, "-"], env(HF_HOME=os.path.join(tmp, "home_s2"), **common), stdin=LUA_PULL)
        check(rc == 0, "skyrun's snapshot_download fetches huggingface_hub's commit", err)
        if rc == 0:
            got = read_tree(out.strip().splitlines()[-1])
            got.pop(".gitattributes", None)
            check(got == files2, "skyrun gets huggingface_hub's push byte-identical",
                  "differs: %s" % sorted(k for k in set(got) | set(files2) if got.get(k) != files2.get(k)))
        with open(os.path.join(tmp, "requests.log")) as f:
            check(TOKEN not in f.read(), "the token is in no logged request")
    finally:
        server.kill()
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
