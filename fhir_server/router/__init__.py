"""The transport-free FHIR router: ``door.handle(services, FhirRequest, Caller) ->
FhirResponse``.

``routes`` is the route table, ``request`` the request and response values, ``door`` the one
function every request goes through (the access policy, the route's handler, the audit),
``dispatch`` the handler of each route and ``responses`` the FHIR headers of an answer.
"""
