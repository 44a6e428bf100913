"""The ingest flow: a device's messages in, validated, stored with the device's state, and
evaluated against its rules, all in one transaction."""
