-- wrk script: POST a body of `size` bytes (argument `size=N`) with a JSON content type, and print
-- the same machine-readable summary line as report.lua.

local size = 1024

function init(args)
  for _, a in ipairs(args) do
    local n = a:match("^size=(%d+)$")
    if n then size = tonumber(n) end
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- A JSON string of exactly `size` bytes: {"d":"xxx…"}
  wrk.body = '{"d":"' .. string.rep("x", size - 8) .. '"}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
