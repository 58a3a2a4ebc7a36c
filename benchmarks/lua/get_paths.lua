-- GET one of the paths listed in a file (argument 1), chosen at random per request.
-- Used by the search, $everything and $summary scenarios over a large data set.

local paths = {}

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         paths[#paths + 1] = line
      end
   end
   assert(#paths > 0, "no paths to request")
   math.randomseed(os.time() + #paths)
   wrk.headers["Accept"] = "application/fhir+json"
end

function request()
   return wrk.format("GET", paths[math.random(#paths)])
end
