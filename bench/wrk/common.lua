-- Shared by the bench scripts: done() prints one machine-readable line that bench/run
-- parses (wrk's own summary above it stays for people). Latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"rps":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end

-- Thread n sends to TARGETS[n mod #TARGETS] (a comma-separated host:port list) when set:
-- points wrk's thread at it and returns true. Scripts call it from setup().
next_id = 0
function spread_over_targets(thread, targets)
  thread:set("id", next_id)
  next_id = next_id + 1
  if not targets then return false end
  local list = {}
  for t in targets:gmatch("[^,]+") do list[#list + 1] = t end
  local host, port = list[(next_id - 1) % #list + 1]:match("^(.*):(%d+)$")
  thread.addr = wrk.lookup(host, port)[1]
  return true
end
