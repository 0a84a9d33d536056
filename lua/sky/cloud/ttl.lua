-- sky.cloud.ttl: the self-termination of a machine after `ttl` seconds, as the script its cloud runs
-- at boot (EC2 user data, a pod's start command). It runs even when the driver that made the
-- machine is gone (killed, network lost), which is the point: nothing outlives its ttl. It
-- carries no secret; a cloud whose machines end themselves through its API reads the key the
-- cloud put in the machine's environment.
local M = {}

local shq = require("sky.ssh.core").shell_quote

--- A shell line that runs `command` in the background after ttl seconds, detached from the boot
--- script (nohup, its own session), or "" for ttl 0.
function M.timer_line(ttl, command)
  if not ttl or ttl <= 0 then return "" end
  return "nohup setsid sh -c " .. shq("sleep " .. math.floor(ttl) .. "; " .. command) .. " >/dev/null 2>&1 &"
end

--- EC2/cloud-init user data: a shell script that shuts the machine down after ttl seconds (with
--- the instance's shutdown behaviour set to terminate, that ends it).
function M.user_data(ttl, pool_id)
  return table.concat({
    "#!/bin/sh",
    "# skyrun pool " .. pool_id .. ": this machine shuts itself down " .. math.floor(ttl) ..
      " s after it started, even if the driver that made it is gone",
    M.timer_line(ttl, "shutdown -h now"),
    "",
  }, "\n")
end

return M
