-- sky.ssh_bootstrap: makes a remote host ready to run `skyrun worker`, over one libssh session.
-- Detects the OS and architecture, uploads the running skyrun binary into a content-addressed
-- cache (~/.cache/skyrun/bin/<sha256>/skyrun) only when it is not there yet, runs the image's
-- bootstrap script with its output streamed and prefixed with the host, and checks that the
-- binary's shared libraries resolve there, naming the missing ones and their Debian packages.
-- It never removes anything on the host.

local core = require "sky.ssh.core"

local M = {}

local shq = require("sky.ssh.core").shell_quote

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

-- Runs one job per host side by side (sky.ssh.core.run_many); jobs[i] may be nil (nothing for
-- host i). Returns the results, indexed like jobs.
local function run_side_by_side(jobs, count)
  local list, where = {}, {}
  for i = 1, count do
    if jobs[i] then
      list[#list + 1] = jobs[i]
      where[#list] = i
    end
  end
  local out = {}
  if #list == 0 then return out end
  for k, r in ipairs(core.run_many(list)) do out[where[k]] = r end
  return out
end

--- Prepares hosts, side by side (one thread per host for the slow steps: the upload, the image
--- script, the library check). sessions: sky.ssh.core sessions. opts:
---   image (an object with :script(lines), optional), bootstrap (plugins' extra script lines),
---   workdir (where the script runs: the workers' folder), sudo (run the image script and apt through
---   `sudo -n` unless the login is root), install_libraries (apt-get install missing libraries), quiet (no streamed output),
---   binary ("/proc/self/exe"), out (function(line) for streamed lines; default this process's stdout).
--- Returns, per host, { path = remote skyrun, home = remote $HOME, os =, arch =, uploaded = bool,
--- checked = bool }. The first host (in order) that fails raises its error, naming it.
function M.prepare_all(sessions, opts)
  opts = opts or {}
  local n = #sessions
  local binary = opts.binary or "/proc/self/exe"
  local sha = core.sha256_file(binary)
  local rel = ".cache/skyrun/bin/" .. sha .. "/skyrun"
  local hosts, prefixes, infos = {}, {}, {}
  for i, s in ipairs(sessions) do
    hosts[i] = s:describe()
    prefixes[i] = "[" .. hosts[i] .. "] "
  end
  local function check_all(results, what)
    for i = 1, n do
      local r = results[i]
      if r and r.error then error(r.error, 0) end
      if r and what then what(i, r) end
    end
  end

  -- one round trip per host: system, home, and whether this exact binary is cached and checked
  local jobs = {}
  for i, s in ipairs(sessions) do
    jobs[i] = { session = s, timeout = 60, command = "uname -s -m; printf '%s\\n' \"$HOME\"; " ..
      "if test -x ~/" .. rel .. "; then echo cached; else echo missing; fi; " ..
      "if test -f ~/" .. rel .. ".checked; then echo checked; else echo unchecked; fi" }
  end
  local here = this_machine()
  check_all(run_side_by_side(jobs, n), function(i, r)
    if r.code ~= 0 then fail(hosts[i], "cannot inspect the host (exit " .. r.code .. "): " .. r.err) end
    local sys, arch, home, cached, checked = r.out:match("^(%S+)%s+(%S+)\n([^\n]*)\n(%a+)\n(%a+)")
    if not sys then fail(hosts[i], "unexpected answer from uname: " .. r.out) end
    if sys ~= here.os or arch ~= here.arch then
      fail(hosts[i], "the host runs " .. sys .. " " .. arch .. " but this skyrun is built for " .. here.os .. " " ..
        here.arch .. ": not supported yet: workers on another OS or architecture")
    end
    infos[i] = { os = sys, arch = arch, home = home, path = home .. "/" .. rel, uploaded = false, checked = false,
                 cached = cached == "cached", was_checked = checked == "checked" }
  end)

  -- the binary, where it is missing
  jobs = {}
  for i, s in ipairs(sessions) do
    if not infos[i].cached then jobs[i] = { session = s, upload_from = binary, upload_to = "~/" .. rel, mode = tonumber("755", 8) } end
  end
  check_all(run_side_by_side(jobs, n), function(i) infos[i].uploaded = true end)

  local function stream(i, line)
    if opts.quiet then return end
    if opts.out then opts.out(prefixes[i] .. line) else io.stdout:write(prefixes[i], line, "\n") io.stdout:flush() end
  end
  -- a shell command on the given hosts, output streamed with each host's prefix; returns results
  local function run_streamed(which, cmd, stdin)
    jobs = {}
    for i, s in ipairs(sessions) do
      if which[i] then
        jobs[i] = { session = s, command = cmd, stdin = stdin }
        if not (opts.quiet or opts.out) then jobs[i].prefix = prefixes[i] end
      end
    end
    local results = run_side_by_side(jobs, n)
    for i = 1, n do
      local r = results[i]
      if r and not r.error and (opts.quiet or opts.out) then
        for line in (r.out .. r.err):gmatch("[^\n]+") do stream(i, line) end
      end
    end
    return results
  end
  -- sudo -n only where the login is not root already (a cloud image's user, sudo without password)
  local function as_root(cmd)
    if not opts.sudo then return cmd end
    return "if [ \"$(id -u)\" = 0 ]; then " .. cmd .. "; else sudo -n " .. cmd .. "; fi"
  end
  local all = {}
  for i = 1, n do all[i] = true end

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
    check_all(run_streamed(all, cd .. "{ " .. as_root("sh -s") .. "; }", script), function(i, r)
      if r.code ~= 0 then
        fail(hosts[i], "the image's bootstrap script failed (exit " .. r.code .. "); its output is above, prefixed with " .. prefixes[i])
      end
    end)
  end

  -- the binary starts there (its shared libraries resolve): once per binary and host
  jobs = {}
  for i, s in ipairs(sessions) do
    if not infos[i].was_checked or infos[i].uploaded then
      jobs[i] = { session = s, timeout = 120, command = shq(infos[i].path) .. " --version" }
    end
  end
  local versions = run_side_by_side(jobs, n)
  local ok_local, local_version = pcall(function() return require("sky").version end)
  check_all(versions, function(i, r)
    local session, host = sessions[i], hosts[i]
    local c, vout, verr = r.code, r.out, r.err
    if c ~= 0 then
      local _, ldd_out = session:run("ldd " .. shq(infos[i].path) .. " 2>&1")
      local missing = M.missing_libraries(ldd_out)
      if #missing == 0 then
        fail(host, "`skyrun --version` failed there (exit " .. c .. "): " .. (verr ~= "" and verr or vout))
      end
      local names, pkgs = M.describe_missing(missing)
      if opts.install_libraries and #pkgs > 0 then
        stream(i, "installing " .. table.concat(pkgs, " "))
        local one = {}
        one[i] = true
        local ir = run_streamed(one, as_root("env DEBIAN_FRONTEND=noninteractive sh -c " ..
          shq("apt-get update -qq && apt-get install -y -qq --no-install-recommends " .. table.concat(pkgs, " "))))[i]
        if ir.error then error(ir.error, 0) end
        if ir.code ~= 0 then fail(host, "installing " .. table.concat(pkgs, " ") .. " failed (exit " .. ir.code .. ")") end
        c, vout, verr = session:run(shq(infos[i].path) .. " --version", { timeout = 120 })
      end
      if c ~= 0 then
        local hint = #pkgs > 0 and ("; install them with: apt-get install " .. table.concat(pkgs, " ") ..
          " (or list them in the pool's sky.Image{apt={...}}, or pass install_libraries=true to the provider)") or ""
        fail(host, "skyrun cannot start there: missing shared libraries " .. names .. hint)
      end
    end
    local remote_version = vout:match("^skyrun (%S+)")
    if ok_local and remote_version and local_version and remote_version ~= local_version then
      fail(host, "the uploaded skyrun reports version " .. remote_version .. ", this one " .. local_version)
    end
    session:run(": > ~/" .. rel .. ".checked")
    infos[i].checked = true
  end)
  for i = 1, n do
    infos[i].cached, infos[i].was_checked = nil, nil
  end
  return infos
end

--- Prepares one host (see prepare_all).
function M.prepare(session, opts) return M.prepare_all({ session }, opts)[1] end

return M
