"""Sample program: threads whose first event comes before threading lists them.

Each of argv[1] threads emits the marker "early <i>" from inside its start-up
(``_set_native_id`` runs before threading puts the thread in its table, where
a collection in a real program would emit first), then "late <i>" from run(),
and ends at once, before the monitor's scan could learn its name.
"""

import sys
import threading

import lpm


class Early(threading.Thread):
    def _set_native_id(self) -> None:
        super()._set_native_id()  # type: ignore[misc]
        lpm.marker(f"early {self.name}")

    def run(self) -> None:
        lpm.marker(f"late {self.name}")


for i in range(int(sys.argv[1])):
    t = Early(name=f"early-{i}")
    t.start()
    t.join()
