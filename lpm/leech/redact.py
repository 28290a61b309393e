"""Hiding secrets in argv and the environment before they leave the process.

The rule (runtime-anchors.md §7, the union of what Django and Spring Boot hide):
a value is replaced by ``<redacted>`` when its key holds one of :data:`SECRET_WORDS`;
the key stays visible so a user sees *what* was hidden.  Passwords inside URLs
(``scheme://user:password@host``) are hidden in every value, whatever the key.
In argv, ``--password=x`` hides ``x``, and ``--password x`` hides the next
argument.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of profiled programs (see lpm/eventlog/catalog.py)
    import re
    from typing import Callable, Iterable, Mapping

REDACTED = "<redacted>"

#: Words that make a key name secret, matched anywhere in the key, any case
#: (compared casefolded: a plain substring test, so the leech need not
#: import ``re``, whose objects would stay in the program's heap).
SECRET_WORDS = (
    "pass", "pwd", "secret", "token", "key", "auth", "credential", "signature", "cookie", "session", "private", "dsn",
    "database_url",
)
#: Keys the words would catch that are not secrets: the shell's directories.
NOT_SECRET = frozenset({"PWD", "OLDPWD"})
_URL_PASSWORD = r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@"
_url_password: re.Pattern[str] | None = None  # compiled when a value first looks like a URL with a password


def secret_key(name: str) -> bool:
    """Whether values under this key (or option name) are hidden."""
    folded = name.casefold()
    return any(word in folded for word in SECRET_WORDS)


def _replace(value: str) -> str:
    return REDACTED


def mask(value: str) -> str:
    """Hide a value keeping its length: for bytes that are forwarded as they
    are, where an event's size cannot change (the server, on a stream a GHC
    runtime wrote; see lpm/server/source.py)."""
    return "*" * len(value)


def redact_value(value: str, hide: Callable[[str], str] = _replace) -> str:
    """Hide URL passwords in a value whose key is not itself secret."""
    global _url_password
    if "://" not in value or "@" not in value:
        return value
    if _url_password is None:
        import re

        _url_password = re.compile(_URL_PASSWORD)
    return _url_password.sub(lambda m: f"{m['scheme']}{m['user']}:{hide(m['password'])}@", value)


def redact_entry(key: str, value: str, hide: Callable[[str], str] = _replace) -> str:
    """One ``KEY=value`` environment entry, its value hidden if secret."""
    secret = key not in NOT_SECRET and secret_key(key)
    return f"{key}={hide(value) if secret else redact_value(value, hide)}"


def redact_env(env: Mapping[str, str]) -> list[str]:
    """``KEY=value`` strings, sorted, with secret values replaced."""
    return [redact_entry(key, env[key]) for key in sorted(env)]


def redact_argv(argv: Iterable[str], hide: Callable[[str], str] = _replace) -> list[str]:
    """argv with the values of secret-looking options replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(hide(arg))
            hide_next = False
            continue
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if secret_key(name):
                if eq:
                    out.append(f"{name}={hide(value)}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(redact_value(arg, hide))
    return out
