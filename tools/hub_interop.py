#!/usr/bin/env python3
"""Checks that skyrun and Python's huggingface_hub share one cache, both ways.

Needs huggingface_hub importable (the GPU machine has it with transformers) and a built skyrun.
Serves a small hub folder with tools/hub_server.py on loopback, then:
  1. Python downloads into cache A; skyrun, offline, must find every file in cache A.
  2. skyrun downloads into cache B; Python, offline, must find every file in cache B, and
     scan_cache_dir must see cache B's repos without warnings.
  3. The layouts of A and B (paths, symlink targets, refs) must be the same.

    python3 tools/hub_interop.py --skyrun build/skyrun

Prints one line per check and "N passed, N failed"; exits 1 on any failure.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9011223344"
DS_COMMIT = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"

FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 32}',
    "model.safetensors": bytes(range(256)) * 400,  # LFS by extension: served through the CDN redirect
    "nested/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}
DS_FILES = {
    "data/train-00000-of-00001.parquet": b"PAR1" + bytes(2000) + b"PAR1",
    "README.md": b"# dataset\n",
}

passed, failed = 0, 0


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL " + what + (("\n     " + detail.replace("\n", "\n     ")) if detail else ""))


def write_repo(root, kind, repo_id, commit, files):
    base = os.path.join(root, kind, *repo_id.split("/"))
    for path, data in files.items():
        full = os.path.join(base, "commits", commit, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    with open(os.path.join(base, "refs", "main"), "w") as f:
        f.write(commit)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["HF_HUB_DISABLE_XET"] = "1"
    env.update(extra)
    return env


def run(cmd, env, stdin=None):
    r = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


PY_DOWNLOAD = """
import sys
from huggingface_hub import hf_hub_download, snapshot_download
for name in %r:
    print(hf_hub_download("org/tiny", name))
print(snapshot_download("org/ds", repo_type="dataset"))
"""

LUA_DOWNLOAD = """
local hf = require "huggingface_hub"
for _, name in ipairs { %s } do print(hf.hf_hub_download("org/tiny", name)) end
print(hf.snapshot_download("org/ds", { repo_type = "dataset" }))
"""


def layout(cache):
    out = []
    for dirpath, dirnames, filenames in os.walk(cache):
        rel_dir = os.path.relpath(dirpath, cache)
        if rel_dir.split(os.sep)[0] in (".locks",) or "/trees" in "/" + rel_dir.replace(os.sep, "/"):
            continue
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if name == "CACHEDIR.TAG" or name.endswith(".incomplete") or ".no_exist" in rel:
                continue
            if os.path.islink(full):
                out.append("%s -> %s" % (rel, os.readlink(full)))
            elif rel.split(os.sep)[1:2] == ["refs"]:
                with open(full) as f:
                    out.append("%s = %s" % (rel, f.read()))
            else:
                with open(full, "rb") as f:
                    out.append("%s sha256:%s" % (rel, hashlib.sha256(f.read()).hexdigest()[:16]))
    return sorted(out)


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

    tmp = tempfile.mkdtemp(prefix="hub_interop_")
    root = os.path.join(tmp, "hub")
    write_repo(root, "models", "org/tiny", COMMIT, FILES)
    write_repo(root, "datasets", "org/ds", DS_COMMIT, DS_FILES)
    port_file = os.path.join(tmp, "port")
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "hub_server.py"), "--root", root,
                               "--port-file", port_file, "--log", os.path.join(tmp, "requests.log"),
                               "--watch-pid", str(os.getpid())])
    try:
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        with open(port_file) as f:
            endpoint = "http://127.0.0.1:" + f.read().strip()
        names = list(FILES)
        lua_names = ", ".join('"%s"' % n for n in names)
        cache_a, cache_b = os.path.join(tmp, "cache_a"), os.path.join(tmp, "cache_b")

        # 1. Python fills A; skyrun reads A offline.
        rc, py_out, err = run([sys.executable, "-c", PY_DOWNLOAD % (names,)],
                              clean_env(HF_ENDPOINT=endpoint, HF_HUB_CACHE=cache_a))
        check(rc == 0, "Python downloads into cache A", err)
        rc, sky_out, err = run([skyrun, "-"], clean_env(HF_HUB_CACHE=cache_a, HF_HUB_OFFLINE="1"),
                               stdin=LUA_DOWNLOAD % lua_names)
        check(rc == 0, "skyrun finds Python's cache A offline", err)
        check(sky_out == py_out and py_out.count("\n") == len(names) + 1, "skyrun resolves the same paths in cache A",
              "python:\n%s\nskyrun:\n%s" % (py_out, sky_out))

        # 2. skyrun fills B; Python reads B offline.
        rc, sky_out, err = run([skyrun, "-"], clean_env(HF_ENDPOINT=endpoint, HF_HUB_CACHE=cache_b),
                               stdin=LUA_DOWNLOAD % lua_names)
        check(rc == 0, "skyrun downloads into cache B", err)
        rc, py_out, err = run([sys.executable, "-c", PY_DOWNLOAD % (names,)],
                              clean_env(HF_HUB_CACHE=cache_b, HF_HUB_OFFLINE="1"))
        check(rc == 0, "Python finds skyrun's cache B offline", err)
        check(sky_out == py_out and py_out.count("\n") == len(names) + 1, "Python resolves the same paths in cache B",
              "skyrun:\n%s\npython:\n%s" % (sky_out, py_out))
        for line, name in zip(py_out.split("\n"), names):
            with open(line, "rb") as f:
                check(f.read() == FILES[name], "contents of %s through Python" % name)
        rc, out, err = run([sys.executable, "-c",
                            "from huggingface_hub import scan_cache_dir\n"
                            "info = scan_cache_dir(%r)\n"
                            "print(len(info.repos), len(info.warnings))\n"
                            "for w in info.warnings: print(w)\n" % cache_b], clean_env())
        check(rc == 0 and out.split("\n")[0] == "2 0", "scan_cache_dir sees 2 repos in cache B, no warnings",
              out + err)

        # 3. Same layout either way, and the same recorded file listings (trees/<commit>.json).
        import json
        for kind_dir, commit in (("datasets--org--ds", DS_COMMIT),):
            ta, tb = [os.path.join(c, kind_dir, "trees", commit + ".json") for c in (cache_a, cache_b)]
            if os.path.exists(ta) and os.path.exists(tb):
                with open(ta) as fa, open(tb) as fb:
                    ja, jb = json.load(fa), json.load(fb)
                check(ja == jb, "trees/%s.json written alike by both" % commit, "A: %s\nB: %s" % (ja, jb))
            else:
                check(os.path.exists(tb), "skyrun wrote trees/%s.json (Python %s)" % (
                    commit, "did too" if os.path.exists(ta) else "does not in this version"))
        la, lb = layout(cache_a), layout(cache_b)
        check(la == lb, "caches A (Python) and B (skyrun) have the same layout",
              "only in A:\n%s\nonly in B:\n%s" % ("\n".join(sorted(set(la) - set(lb))),
                                                 "\n".join(sorted(set(lb) - set(la)))))
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
