"""Real-audio SAP corpus from registry packages: ``uniaudio-rt data build|stats`` (docs/DATA.md)."""
