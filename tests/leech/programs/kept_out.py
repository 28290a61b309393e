"""Under ``lpm run``: which objects the program's collections walk, as JSON.

Run as ``lpm run kept_out.py``, or plainly (it then calls ``lpm.start()``
itself, with LPM_* settings): prints what the leech kept out of the
collections while it runs, then stops it and prints what is walked again;
with ``fork`` it also forks, and the child reports on its own leech."""

import gc
import json
import os
import sys

import lpm
import lpm.leech
import lpm.leech.monitor


class Mine:
    """An object of the program's."""


mine = Mine()
os.environ["KEPT_OUT"] = "1"
walked = {id(o) for o in gc.get_objects()}


def walked_now() -> set[int]:
    return {id(o) for o in gc.get_objects()}


leech = lpm.leech.active()
if leech is None:  # run as a plain script: the program starts the leech itself
    leech = lpm.start()
    walked = {id(o) for o in gc.get_objects()}
lpm_dict = vars(lpm.leech.monitor)
report = {
    "kept_out": leech.kept_out,
    "lpm_dict_walked": id(lpm_dict) in walked,
    "lpm_dict_tracked": gc.is_tracked(lpm_dict),
    "leech_walked": id(leech) in walked,
    "program_not_walked": [name for name, o in [("globals", globals()), ("mine", mine), ("argv", sys.argv),
                                                ("environ", os.environ)] if id(o) not in walked],
}
for generation in (0, 1, 2):
    gc.collect(generation)  # a collection with lpm's objects kept out changes nothing of theirs
report["lpm_alive"] = lpm.leech.active() is leech and lpm_dict["Monitor"] is lpm.leech.monitor.Monitor
if sys.argv[1:] == ["fork"]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        gc.collect()
        child = lpm.leech.active()
        os.write(write, json.dumps({"kept_out": child.kept_out if child else -1,
                                    # (lpm_dict is the program's global now: it stays walked)
                                    "lpm_dict_walked": id(vars(lpm.leech.config)) in walked_now()}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        report["child"] = json.loads(f.read())
    os.waitpid(pid, 0)
lpm.stop()
gc.collect()
report["after_stop_lpm_dict_walked"] = id(lpm_dict) in walked_now()
print(json.dumps(report))
