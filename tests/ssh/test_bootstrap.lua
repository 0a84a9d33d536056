-- Bootstrap of a host over one libssh session: OS/arch detection, the content-addressed binary
-- upload (skipped the second time), the image script streamed with the host prefix, and the
-- shared-library check naming missing libraries and their Debian packages.
local T = require "testlib"
local Sshd = require "sshd"
local ssh = require "sky.ssh.core"
local boot = require "sky.ssh_bootstrap"

local q = T.shell_quote
local key = Sshd.user_key()

local function connect(server)
  local kh = Sshd.tmpdir("kh") .. "/known_hosts"
  T.write_file(kh, server:known_hosts_line() .. "\n")
  return ssh.connect { target = server.spec, key = key.private, known_hosts = kh }
end

-- An image as sky.Image renders it: anything with :script().
local function image(script) return { script = function() return script end } end

T.test("the first start uploads the binary by content; the second skips upload and check", function()
  local server = Sshd.start { authorized = { key }, name = "boot" }
  local sha = ssh.sha256_file("/proc/self/exe")
  T.eq(#sha, 64)
  local s = connect(server)
  local info = boot.prepare(s, { quiet = true })
  T.eq(info.uploaded, true)
  T.eq(info.checked, true)
  T.eq(info.home, server.home)
  T.eq(info.path, server.home .. "/.cache/skyrun/bin/" .. sha .. "/skyrun")
  T.eq(ssh.sha256_file(info.path), sha)
  T.eq(T.sh("stat -c %a " .. q(info.path)), "755\n")
  local _, out = s:run(q(info.path) .. " -e 'print(1 + 1)'")
  T.eq(out, "2\n")
  s:close()
  local mtime = T.sh("stat -c %Y.%i " .. q(info.path))
  s = connect(server)
  local again = boot.prepare(s, { quiet = true })
  T.eq(again.uploaded, false)
  T.eq(again.checked, false, "the library check ran once, on the first start")
  T.eq(T.sh("stat -c %Y.%i " .. q(info.path)), mtime, "the cached binary was not rewritten")
  s:close()
  server:stop()
end)

T.test("the image script's output streams to the driver prefixed with the host", function()
  local server = Sshd.start { authorized = { key }, name = "img" }
  local dir = T.tmpdir()
  T.write_file(dir .. "/job.lua", string.format([[
    local ssh = require "sky.ssh.core"
    local boot = require "sky.ssh_bootstrap"
    local s = ssh.connect { target = %q, key = %q, known_hosts = %q }
    local img = { script = function() return "echo step one\necho to stderr >&2\nprintf 'no newline'" end }
    boot.prepare(s, { image = img })
    print("done")
  ]], server.spec, key.private, (function()
    local kh = dir .. "/kh"
    T.write_file(kh, server:known_hosts_line() .. "\n")
    return kh
  end)()))
  local out, err, code = T.skyrun({ dir .. "/job.lua" })
  T.eq(code, 0, err)
  local p = "[" .. server.spec .. "] "
  T.eq(out, p .. "step one\n" .. p .. "no newline\ndone\n")
  T.eq(err, p .. "to stderr\n")
  server:stop()
end)

T.test("a failing image script stops the bootstrap naming the host and exit status", function()
  local server = Sshd.start { authorized = { key }, name = "bad-img" }
  local s = connect(server)
  local lines = {}
  local err = T.raises(function()
    boot.prepare(s, { image = image("echo about to fail\nexit 7\n"), out = function(l) lines[#lines + 1] = l end })
  end, "ssh " .. server.spec .. ": the image's bootstrap script failed (exit 7)")
  T.eq(lines, { "[" .. server.spec .. "] about to fail" })
  s:close()
  server:stop()
end)

T.test("missing shared libraries on the host are named with their Debian packages", function()
  local server = Sshd.start { authorized = { key }, name = "nolibs", hide_libraries = { "libssh.so.4", "libedit.so.2" } }
  local s = connect(server)
  local err = T.raises(function() boot.prepare(s, { quiet = true }) end, "skyrun cannot start there: missing shared libraries")
  T.contains(err, server.spec)
  T.contains(err, "libssh.so.4 (Debian/Ubuntu package libssh-4)")
  T.contains(err, "libedit.so.2 (Debian/Ubuntu package libedit2)")
  T.contains(err, "apt-get install libedit2 libssh-4")
  T.contains(err, "sky.Image{apt={...}}")
  -- nothing was marked as checked: the next start checks again
  local _, out = s:run("ls ~/.cache/skyrun/bin/*/")
  T.eq(out, "skyrun\n")
  s:close()
  server:stop()
end)

T.test("ldd output is parsed into missing sonames", function()
  local ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibssh.so.4 => not found\n\tlibcurl.so.4 => /lib/x86_64-linux-gnu/libcurl.so.4 (0x1)\n" ..
    "\tlibfoo.so.9 => not found\n\tlibssh.so.4 => not found\n"
  T.eq(boot.missing_libraries(ldd), { "libssh.so.4", "libfoo.so.9" })
  local names, pkgs = boot.describe_missing { "libssh.so.4", "libfoo.so.9" }
  T.eq(names, "libssh.so.4 (Debian/Ubuntu package libssh-4), libfoo.so.9 (package unknown)")
  T.eq(pkgs, { "libssh-4" })
end)

T.run()
