-- wrk script that changes the request every time:
--   tokens=FILE  one JWT per line; each request carries the next one (a fresh token per request)
--   token=JWT    the same token on every request (with paths=, for the scale runs)
--   paths=FILE   one request path per line; each request takes the next one
--   threads=N    wrk's -t, so that thread k uses lines k, k+N, k+2N, ...: no token is sent by two
--                threads, and a token comes back only after all others have been sent once
-- Arguments follow `--` on the wrk command line. Prints the same WRKJSON line as report.lua.

local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local tokens, paths, fixed
local ti, pi, step = 0, 0, 1

local function lines(file)
  local t = {}
  for l in io.lines(file) do
    if #l > 0 then t[#t + 1] = l end
  end
  assert(#t > 0, file .. " is empty")
  return t
end

function init(args)
  local opts = {}
  for _, a in ipairs(args) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k then opts[k] = v end
  end
  step = tonumber(opts.threads or "1")
  if opts.tokens then tokens = lines(opts.tokens) end
  if opts.paths then paths = lines(opts.paths) end
  if opts.token then fixed = "Bearer " .. opts.token end
  ti = tid or 0
  pi = tid or 0
end

function request()
  local headers = {}
  if tokens then
    headers["Authorization"] = "Bearer " .. tokens[ti % #tokens + 1]
    ti = ti + step
  elseif fixed then
    headers["Authorization"] = fixed
  end
  local path = nil
  if paths then
    path = paths[pi % #paths + 1]
    pi = pi + step
  end
  return wrk.format(nil, path, headers)
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
