-- GET of the files listed in PATHS (one path a line), each thread starting at its own
-- offset and going round the list: reads the same files another tool reads (bench/verify
-- compares this with `mkv verify -deep` over the same replicas, at the same concurrency).
--   env: PATHS (a file of paths), THREADS (wrk -t, to spread the starting offsets),
--        TARGETS=h:p,h:p,h:p (thread n reads from TARGETS[n mod #TARGETS]: every volume
--        holds the same paths when each holds a replica of every key)
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local targets = os.getenv("TARGETS")

local paths = {}
for line in io.lines(os.getenv("PATHS")) do
  paths[#paths + 1] = line
end

function setup(thread)
  spread_over_targets(thread, targets)
end

local i = nil
function request()
  if i == nil then
    local threads = tonumber(os.getenv("THREADS") or "1")
    i = math.floor(#paths * id / threads)
  end
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
