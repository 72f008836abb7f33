"""Converters from other checkpoint formats into uniaudio-rt models."""
