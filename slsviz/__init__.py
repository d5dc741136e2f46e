"""slsviz: see, score and prune the layers of PETL vision transformers (SLS, Han & Tang 2024)."""

__version__ = "0.1.0"
