"""Viet Nam's administrative geography before and after 1 July 2025.

:mod:`~fhir_server.geography.units` looks units up by code and date and tells where a unit of
before the reform lies today; :mod:`~fhir_server.geography.addresses` reads, checks and
annotates the unit codes of FHIR Address elements.
"""
