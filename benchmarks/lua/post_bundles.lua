-- POST transaction Bundles read from an NDJSON file (argument 1) to the FHIR base, each
-- thread taking its own share of the lines in order (so every push is a new visit).
-- Argument 3, if given, is the Content-Type (application/xml for XML 130 envelopes, one per
-- line, posted to $import-xml130).

local bundles = {}
local next_index = 1
local thread_number = 0
local threads_total = 1
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("number", counter)
end

function init(args)
   thread_number = (number or 1) - 1
   threads_total = tonumber(args[2]) or 1
   local index = 0
   for line in io.lines(args[1]) do
      if #line > 0 then
         if index % threads_total == thread_number then
            bundles[#bundles + 1] = line
         end
         index = index + 1
      end
   end
   assert(#bundles > 0, "no bundles for this thread")
   wrk.method = "POST"
   wrk.headers["Content-Type"] = args[3] or "application/fhir+json"
end

function request()
   local body = bundles[next_index]
   next_index = next_index % #bundles + 1
   return wrk.format("POST", nil, nil, body)
end
