"""Loopback servers for the fetch tests: NBIA v4 (fault-injecting), Orthanc DICOMweb, S3 (moto)."""
