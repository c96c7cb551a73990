-- wrk script: GET /sdk/v1/config revalidation (If-None-Match with the current ETag → 304).
-- usage: SDK=<sdk token> ETAG='"<version>"' wrk -t1 -c64 -d20s --latency -s bench/server/config304.lua http://127.0.0.1:18080/sdk/v1/config
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SDK")
wrk.headers["If-None-Match"] = os.getenv("ETAG") or "*"
