"""Tests against real peers: GHC 9.0.2 programs and the ghc-events library."""
