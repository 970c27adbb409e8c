"""geoaccess: travel time to health care, coverage gaps and facility siting for remote regions."""
__version__ = "0.1.0"
