-- GCRA over one or more buckets, atomically: every bucket is checked and, only if all of them
-- conform, every bucket is charged (so a request denied by one limit spends none of the others).
--
-- KEYS[i]             bucket i (a string value: its theoretical arrival time, TAT, in µs)
-- ARGV[2i-1], ARGV[2i] bucket i's emission interval T and tolerance tau (= burst * T), in µs
--
-- Time is Redis's own clock (TIME), so the gateways' clocks do not have to agree.
-- Returns {allowed (1 or 0), ahead_1, ..., ahead_n}: how far each bucket's TAT was ahead of now
-- before this request, in µs (0 when in the past). The caller turns those into the decision and
-- the RateLimit-* numbers with the same arithmetic as the local store.
--
-- Numbers: µs since the epoch are ~1.8e15, exact in a Lua double (< 2^53). They are written with
-- '%.0f', never with Lua's default '%.14g', which would round them.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local tats = {}
for i = 1, #KEYS do
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  tats[i] = tat
  local ahead = tat - now
  out[i + 1] = ahead
  if ahead > tau then out[1] = 0 end
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local new = tats[i] + tonumber(ARGV[2 * i - 1])
    local ttl = math.ceil((new - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', string.format('%.0f', ttl))
  end
end
return out
