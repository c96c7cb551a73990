-- wrk script: POST /sdk/v1/evaluate with rotating units, countries and surfaces.
-- usage: SDK=<sdk token> wrk -t1 -c64 -d20s --latency -s bench/server/evaluate.lua http://127.0.0.1:18080/sdk/v1/evaluate
local token = os.getenv("SDK")
local bodies = {}
for i = 0, 999 do
  local country = (i % 3 == 0) and "FR" or "US"
  bodies[i] = string.format('{"context":{"user_id":"user-%d","country":"%s"},"surface":"s%d"}', i * 7919, country, i % 100)
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  n = (n + 1) % 1000
  return wrk.format(nil, nil, nil, bodies[n])
end
