"""Starts the leech at interpreter start-up when ``LPM_AUTOSTART`` is set.

``pip install`` puts ``lpm-autostart.pth`` into site-packages; the site module
runs its one line in every interpreter, and that line imports this module only
when ``LPM_AUTOSTART`` is set to something other than "" or "0", so programs
that do not ask pay for one environment lookup.  For programs you cannot
change: ``LPM_AUTOSTART=1 python program.py``.
"""

from __future__ import annotations


def _autostart() -> None:
    import lpm

    try:
        lpm.start()
    except Exception as err:  # noqa: BLE001 - never keep the program from starting
        import logging  # only now: the logging package is large, and would stay in the program's memory

        logging.getLogger("lpm").warning("LPM_AUTOSTART: the leech did not start: %s", err)


_autostart()
