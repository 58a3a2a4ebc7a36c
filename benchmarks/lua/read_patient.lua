-- Read scenario: GET /fhir/Patient/{id} for a random id among those seeded by run.py.
-- Argument 1 (after wrk's "--") is a file with one Patient id per line.

local ids = {}
local base_path = "/fhir/Patient/"

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         ids[#ids + 1] = line
      end
   end
   assert(#ids > 0, "no Patient ids to read")
   if args[2] then
      base_path = args[2]
   end
   math.randomseed(os.time() + #ids)
   wrk.headers["Accept"] = "application/fhir+json"
end

function request()
   return wrk.format("GET", base_path .. ids[math.random(#ids)])
end
