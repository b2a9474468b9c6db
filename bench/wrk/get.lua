-- GET spread over KEYS keys: KEY_PREFIX .. 0 … KEY_PREFIX .. (KEYS-1), each thread walking
-- its own shuffled order. Requests are formatted once in init(), so per request wrk only
-- hands over a prebuilt string: the cost on wrk's side is the same whatever the server.
--   env: KEYS (100000), KEY_PREFIX (/bench/k), DELAY_MS (unset: closed loop as fast as
--        possible; set: each connection waits that long between requests — a held rate),
--        PATHS (a file of request paths, one a line: those instead of KEYS keys),
--        HEADER ("Name: value", sent with every request),
--        RANDOM_KEYS=1 (each request a key drawn uniformly at random and formatted then: for
--        millions of keys, whose prebuilt requests would take wrk ~10 s and ~500 MB a
--        thread, while the threads already started send unmeasured requests)
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local keys = tonumber(os.getenv("KEYS") or "100000")
local prefix = os.getenv("KEY_PREFIX") or "/bench/k"
local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
local paths = os.getenv("PATHS")
local header = os.getenv("HEADER")
local random = os.getenv("RANDOM_KEYS") == "1" -- not RANDOM: bash makes that one up

function setup(thread)
  spread_over_targets(thread, nil)
end

local reqs, i, before, after = {}, 0, nil, nil
function init(args)
  math.randomseed(4242 + 7919 * (id or 0))
  local headers = nil
  if header then
    local name, value = header:match("^([^:]+):%s*(.*)$")
    headers = { [name] = value }
  end
  if random then
    before, after = wrk.format("GET", prefix .. "@KEY@", headers):match("^(.-)@KEY@(.*)$")
    return
  end
  if paths then
    for p in io.lines(paths) do reqs[#reqs + 1] = wrk.format("GET", p, headers) end
    keys = #reqs
  else
    for k = 1, keys do reqs[k] = wrk.format("GET", prefix .. (k - 1), headers) end
  end
  for k = keys, 2, -1 do
    local j = math.random(k)
    reqs[k], reqs[j] = reqs[j], reqs[k]
  end
  i = math.random(keys) - 1
end

function request()
  if random then return before .. (math.random(keys) - 1) .. after end
  i = i % keys + 1
  return reqs[i]
end

if delay_ms then
  function delay() return delay_ms end
end
