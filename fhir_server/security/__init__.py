"""Security: access tokens, SMART scopes, backend-services clients and the token endpoint.

The modules here are pure (no HTTP types); ``api`` turns their errors into responses.
"""
