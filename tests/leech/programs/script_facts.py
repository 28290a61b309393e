"""Prints, as JSON, what a script sees of how it was run: for checking that
``lpm run script.py`` runs it as ``python script.py`` does."""

import json
import os
import pickle
import sys


class Here:
    pass


def annotated(x: int) -> None:
    pass


facts = {
    "name": __name__,
    "file": __file__,
    "package": __package__,
    "spec": repr(__spec__),
    "argv": sys.argv,
    "path0": sys.path[0] == os.path.dirname(os.path.abspath(__file__)),
    "main_is_here": getattr(sys.modules["__main__"], "Here", None) is Here,
    "pickles": type(pickle.loads(pickle.dumps(Here()))) is Here,
    "annotations_evaluated": annotated.__annotations__["x"] is int,  # no __future__ flags leak in
    "doc": __doc__ is not None and __doc__.startswith("Prints"),
}
print(json.dumps(facts, sort_keys=True))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
