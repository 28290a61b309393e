"""Fuzzing of every decoder lpm exposes to a peer (DESIGN.md §9, issue 8).

:mod:`tests.fuzz.cases` holds the seeded generators, mutators and harness;
``test_fuzz.py`` runs a quick seeded pass in the test suite and
``bench/fuzz.py`` a longer one.
"""
