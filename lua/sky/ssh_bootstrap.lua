-- sky.ssh_bootstrap: makes a remote host ready to run `skyrun worker`, over one libssh session.
-- Detects the OS and architecture, uploads the running skyrun binary into a content-addressed
-- cache (~/.cache/skyrun/bin/<sha256>/skyrun) only when it is not there yet, runs the image's
-- bootstrap script with its output streamed and prefixed with the host, and checks that the
-- binary's shared libraries resolve there, naming the missing ones and their Debian packages.
-- It never removes anything on the host.

local core = require "sky.ssh.core"

local M = {}

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function popen_read(cmd)
  local f = io.popen(cmd, "r")
  if not f then return "" end
  local out = f:read("*a") or ""
  f:close()
  return out
end

local local_uname
local function this_machine()
  if not local_uname then
    local s, m = popen_read("uname -s -m"):match("^(%S+)%s+(%S+)")
    local_uname = { os = s or "?", arch = m or "?" }
  end
  return local_uname
end

-- ---- shared libraries ---------------------------------------------------------------------------

--- Sonames that `ldd` output reports as "not found", in order, without repeats.
function M.missing_libraries(ldd_output)
  local out, seen = {}, {}
  for name in ldd_output:gmatch("([^%s]+)%s*=>%s*not found") do
    if not seen[name] then
      seen[name] = true
      out[#out + 1] = name
    end
  end
  return out
end

-- Fallback when the driver cannot ask dpkg (Debian/Ubuntu names of the libraries skyrun links).
M.known_packages = {
  ["libssh.so.4"] = "libssh-4", ["libcurl.so.4"] = "libcurl4", ["libedit.so.2"] = "libedit2",
  ["libcrypto.so.3"] = "libssl3", ["libssl.so.3"] = "libssl3", ["libstdc++.so.6"] = "libstdc++6",
  ["libgcc_s.so.1"] = "libgcc-s1", ["libz.so.1"] = "zlib1g", ["libzstd.so.1"] = "libzstd1",
  ["libsnappy.so.1v5"] = "libsnappy1v5", ["libpcre2-8.so.0"] = "libpcre2-8-0",
  ["libutf8proc.so.2"] = "libutf8proc2", ["libutf8proc.so.3"] = "libutf8proc3",
  ["libgomp.so.1"] = "libgomp1", ["libtorch.so.1"] = "libtorch1.13", ["libtorch_cpu.so.1"] = "libtorch1.13",
  ["libc10.so.1"] = "libtorch1.13", ["libbsd.so.0"] = "libbsd0", ["libtinfo.so.6"] = "libtinfo6",
}

local package_cache = {}
--- The Debian/Ubuntu package that provides a soname, from this machine's dpkg database (the
--- driver runs the same binary, so it has the library), else the built-in table; nil if unknown.
function M.package_for(soname)
  if package_cache[soname] ~= nil then return package_cache[soname] or nil end
  local pkg
  local stat = io.open("/proc/self/stat")
  local pid = stat and stat:read("*a"):match("^(%d+)")
  if stat then stat:close() end
  local path = popen_read("ldd /proc/" .. (pid or "self") .. "/exe 2>/dev/null"):match(
    "%f[%S]" .. soname:gsub("%p", "%%%0") .. "%s*=>%s*(%S+)")
  if path and path:sub(1, 1) == "/" then
    local real = popen_read("readlink -f " .. shq(path)):match("[^\n]+") or path
    local candidates = { path, real, (path:gsub("^/lib/", "/usr/lib/")), (real:gsub("^/lib/", "/usr/lib/")) }
    for _, p in ipairs(candidates) do
      pkg = popen_read("dpkg-query -S " .. shq(p) .. " 2>/dev/null"):match("^([^:,%s]+)")
      if pkg then break end
    end
  end
  pkg = pkg or M.known_packages[soname]
  package_cache[soname] = pkg or false
  return pkg
end

--- "libssh.so.4 (Debian/Ubuntu package libssh-4), libfoo.so.1 (package unknown)"; and the list of packages.
function M.describe_missing(sonames)
  local parts, pkgs, seen = {}, {}, {}
  for _, so in ipairs(sonames) do
    local pkg = M.package_for(so)
    if pkg then
      parts[#parts + 1] = so .. " (Debian/Ubuntu package " .. pkg .. ")"
      if not seen[pkg] then
        seen[pkg] = true
        pkgs[#pkgs + 1] = pkg
      end
    else
      parts[#parts + 1] = so .. " (package unknown)"
    end
  end
  return table.concat(parts, ", "), pkgs
end

-- ---- the steps -----------------------------------------------------------------------------------

local function fail(host, msg) error("ssh " .. host .. ": " .. msg, 0) end

--- Prepares one host. session: a sky.ssh.core session. opts:
---   image (an object with :script(lines), optional), bootstrap (plugins' extra script lines),
---   workdir (where the script runs: the workers' folder), sudo (run the image script and apt through
---   `sudo -n`), install_libraries (apt-get install missing libraries), quiet (no streamed output),
---   binary ("/proc/self/exe"), out (function(line) for streamed lines; default io.stdout).
--- Returns { path = remote skyrun, home = remote $HOME, os =, arch =, uploaded = bool, checked = bool }.
function M.prepare(session, opts)
  opts = opts or {}
  local host = session:describe()
  local prefix = "[" .. host .. "] "
  local binary = opts.binary or "/proc/self/exe"
  local sha = core.sha256_file(binary)
  local rel = ".cache/skyrun/bin/" .. sha .. "/skyrun"

  -- one round trip: system, home, and whether this exact binary is cached and was checked
  local code, out, err = session:run(
    "uname -s -m; printf '%s\\n' \"$HOME\"; " ..
    "if test -x ~/" .. rel .. "; then echo cached; else echo missing; fi; " ..
    "if test -f ~/" .. rel .. ".checked; then echo checked; else echo unchecked; fi", { timeout = 60 })
  if code ~= 0 then fail(host, "cannot inspect the host (exit " .. code .. "): " .. err) end
  local sys, arch, home, cached, checked = out:match("^(%S+)%s+(%S+)\n([^\n]*)\n(%a+)\n(%a+)")
  if not sys then fail(host, "unexpected answer from uname: " .. out) end
  local here = this_machine()
  if sys ~= here.os or arch ~= here.arch then
    fail(host, "the host runs " .. sys .. " " .. arch .. " but this skyrun is built for " .. here.os .. " " ..
      here.arch .. ": not supported yet: workers on another OS or architecture")
  end
  local info = { os = sys, arch = arch, home = home, path = home .. "/" .. rel, uploaded = false, checked = false }

  if cached ~= "cached" then
    session:upload(binary, "~/" .. rel, tonumber("755", 8))
    info.uploaded = true
  end

  local function stream(line)
    if opts.quiet then return end
    if opts.out then opts.out(prefix .. line) else io.stdout:write(prefix, line, "\n") io.stdout:flush() end
  end
  local function run_streamed(cmd, stdin)
    local lines = {}
    -- output is streamed through the native prefix writer unless a custom sink or quiet is asked
    if opts.quiet or opts.out then
      local c, o, e = session:run(cmd, { stdin = stdin })
      for line in (o .. e):gmatch("[^\n]+") do stream(line) lines[#lines + 1] = line end
      return c, lines
    end
    local c = session:run(cmd, { stdin = stdin, prefix = prefix })
    return c, lines
  end
  local sudo = opts.sudo and "sudo -n " or ""

  local bootstrap_lines = opts.bootstrap or {}
  if opts.image or #bootstrap_lines > 0 then
    local image = opts.image or require("sky.image").Image {}
    local script = image:script(bootstrap_lines)
    -- the image's relative file paths are the workers' folder
    local cd = ""
    if opts.workdir then
      local dir = opts.workdir:sub(1, 2) == "~/" and ('"$HOME"/' .. shq(opts.workdir:sub(3))) or shq(opts.workdir)
      cd = "mkdir -p " .. dir .. " && cd " .. dir .. " && "
    end
    local c = run_streamed(cd .. sudo .. "sh -s", script)
    if c ~= 0 then fail(host, "the image's bootstrap script failed (exit " .. c .. "); its output is above, prefixed with " .. prefix) end
  end

  if checked ~= "checked" or info.uploaded then
    local c, vout, verr = session:run(shq(info.path) .. " --version", { timeout = 120 })
    if c ~= 0 then
      local _, ldd_out = session:run("ldd " .. shq(info.path) .. " 2>&1")
      local missing = M.missing_libraries(ldd_out)
      if #missing == 0 then
        fail(host, "`skyrun --version` failed there (exit " .. c .. "): " .. (verr ~= "" and verr or vout))
      end
      local names, pkgs = M.describe_missing(missing)
      if opts.install_libraries and #pkgs > 0 then
        stream("installing " .. table.concat(pkgs, " "))
        local ic = run_streamed(sudo .. "env DEBIAN_FRONTEND=noninteractive sh -c " ..
          shq("apt-get update -qq && apt-get install -y -qq --no-install-recommends " .. table.concat(pkgs, " ")))
        if ic ~= 0 then fail(host, "installing " .. table.concat(pkgs, " ") .. " failed (exit " .. ic .. ")") end
        c, vout, verr = session:run(shq(info.path) .. " --version", { timeout = 120 })
      end
      if c ~= 0 then
        local hint = #pkgs > 0 and ("; install them with: apt-get install " .. table.concat(pkgs, " ") ..
          " (or list them in the pool's sky.Image{apt={...}}, or pass install_libraries=true to the provider)") or ""
        fail(host, "skyrun cannot start there: missing shared libraries " .. names .. hint)
      end
    end
    local remote_version = vout:match("^skyrun (%S+)")
    local ok, local_version = pcall(function() return require("sky").version end)
    if ok and remote_version and local_version and remote_version ~= local_version then
      fail(host, "the uploaded skyrun reports version " .. remote_version .. ", this one " .. local_version)
    end
    session:run(": > ~/" .. rel .. ".checked")
    info.checked = true
  end
  return info
end

return M
