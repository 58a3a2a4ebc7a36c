"""HL7 FHIR R4 server for Vietnam's electronic health book."""

__all__ = ["FHIR_VERSION", "__version__"]

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
