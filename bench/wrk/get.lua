-- GET spread over KEYS keys: KEY_PREFIX .. 0 … KEY_PREFIX .. (KEYS-1), each thread walking
-- its own shuffled order. Requests are formatted once in init(), so per request wrk only
-- hands over a prebuilt string: the cost on wrk's side is the same whatever the server.
--   env: KEYS (100000), KEY_PREFIX (/bench/k), DELAY_MS (unset: closed loop as fast as
--        possible; set: each connection waits that long between requests — a held rate)
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local keys = tonumber(os.getenv("KEYS") or "100000")
local prefix = os.getenv("KEY_PREFIX") or "/bench/k"
local delay_ms = tonumber(os.getenv("DELAY_MS") or "")

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local reqs, i = {}, 0
function init(args)
  math.randomseed(4242 + 7919 * (id or 0))
  for k = 1, keys do reqs[k] = wrk.format("GET", prefix .. (k - 1)) end
  for k = keys, 2, -1 do
    local j = math.random(k)
    reqs[k], reqs[j] = reqs[j], reqs[k]
  end
  i = math.random(keys) - 1
end

function request()
  i = i % keys + 1
  return reqs[i]
end

if delay_ms then
  function delay() return delay_ms end
end
