"""Digital signatures on what facilities push, and on what the server produces.

What is signed and how it is read (``canonical``), who is trusted (``trust``), the three kinds
of signature (``jws`` for FHIR JSON, ``xmldsig`` for the XML 130 envelope, ``pdf`` for a signed
PDF), the result of a verification as R4 data (``verification``), the proof kept beside what
was signed (``proof``), the check made on every write (``on_write``) and again later
(``recheck``). docs/signatures.md says what a hospital sends and what a verifier checks.
"""
