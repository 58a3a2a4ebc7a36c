-- Create scenario: POST a Patient per request.
-- Argument 1 (after wrk's "--") is a file holding the JSON template written by run.py; every
-- "__N__" in it is replaced by "<thread>-<counter>" so that each body differs a little.

local template = nil
local thread_tag = "0"
local counter = 0
local next_tag = 0

function setup(thread)
   next_tag = next_tag + 1
   thread:set("tag", tostring(next_tag))
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   template = file:read("*a")
   file:close()
   thread_tag = tag or "0"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/fhir+json"
   wrk.headers["Accept"] = "application/fhir+json"
end

function request()
   counter = counter + 1
   local body = template:gsub("__N__", thread_tag .. "-" .. counter)
   return wrk.format("POST", nil, nil, body)
end
