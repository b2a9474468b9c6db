-- PUT of fresh keys, BODY_SIZE bytes each: every request a key never used before
-- (RUN_ID, random per run, + thread id + per-thread counter), so each one is a real
-- create and never a 403.
--   env: RUN_ID, BODY_SIZE (1024),
--        TARGETS=h:p,h:p,h:p  (direct mode: thread n talks to TARGETS[n mod #TARGETS]
--        and writes volume paths /bench-direct/xx/yy/name, like mkv's /svNN/xx/yy/name),
--        HEADER ("Name: value", sent with every request)
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local run_id = os.getenv("RUN_ID") or tostring(os.time())
local size = tonumber(os.getenv("BODY_SIZE") or "1024")
local targets = os.getenv("TARGETS")
local header = os.getenv("HEADER")

function setup(thread)
  if spread_over_targets(thread, targets) then
    thread:set("direct", true)
  end
end

local body, headers, n = nil, nil, 0
function init(args)
  body = string.rep("b", size)
  if header then
    local name, value = header:match("^([^:]+):%s*(.*)$")
    headers = { [name] = value }
  end
end

function request()
  n = n + 1
  local path
  if direct then
    path = string.format("/bench-direct/%02x/%02x/%s-%d-%d", n % 256, math.floor(n / 256) % 256, run_id, id, n)
  else
    path = string.format("/put/%s/%d/%d", run_id, id, n)
  end
  return wrk.format("PUT", path, headers, body)
end
