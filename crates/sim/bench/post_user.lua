-- wrk script: POST /Users with a unique userName per request (thread id + counter).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bench-'
    .. tostring(tid) .. '-' .. counter .. '","name":{"givenName":"B","familyName":"N"},'
    .. '"emails":[{"value":"b@example.com","type":"work","primary":true}]}'
  return wrk.format("POST", nil, { ["Content-Type"] = "application/scim+json" }, body)
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end
