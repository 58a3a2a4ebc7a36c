"""Bridges: translators in front of the request path.

A bridge turns what a sender already emits (today the XML 130 claim envelope of Vietnamese
facilities) into the FHIR requests the server understands, keeping the original bytes as
evidence. Mapping knowledge is data read by a small engine; see ``bridges.xml130``.
"""
