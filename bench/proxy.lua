-- wrk script for benchmarking a forward proxy: wrk connects to the proxy's port and
-- sends absolute-form requests (GET http://host:port/ HTTP/1.1), as proxy clients do.
-- BENCH_TARGET: the absolute URL; BENCH_PROXY_AUTH: optional Proxy-Authorization value.
local target = os.getenv("BENCH_TARGET")
local auth = os.getenv("BENCH_PROXY_AUTH")
local req

init = function(args)
  local hostport = target:match("^http://([^/]+)")
  local headers = { ["Host"] = hostport }
  if auth and auth ~= "" then
    headers["Proxy-Authorization"] = auth
  end
  req = wrk.format("GET", target, headers)
end

request = function()
  return req
end
