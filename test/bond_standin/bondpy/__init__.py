"""Test stand-in for bond_core's ``bondpy`` (no wheel on PyPI); see bondpy.py beside this file."""
