"""Prints the objects the cyclic GC walks, and the modules loaded, as JSON.

It imports nothing itself, so that a plain run and a run under ``lpm run``
differ by all that lpm adds: its own objects and those of the modules it
loads."""

import gc
import json
import sys

gc.collect()
print(json.dumps({"objects": len(gc.get_objects()), "modules": sorted(sys.modules)}))
