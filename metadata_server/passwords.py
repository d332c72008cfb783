"""Password hashing (SHA-512 crypt via libpass) and generation.

Pure: the caller passes the salt and the random bytes, so this module never reaches for
the clock or a random source. Plain passwords pass through here and nowhere else, and no
function returns or raises anything that contains one.
"""

from __future__ import annotations

import re

from passlib.hash import sha512_crypt

# glibc's default for `$6$` without a rounds= field, so the hash stays short and every
# chpasswd reads it; the admin can raise it in the configuration.
DEFAULT_ROUNDS = 5000
SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# No look-alikes (0/O, 1/l/I) so a generated password can be read off a screen.
PASSWORD_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
GENERATED_LENGTH = 24  # 24 symbols of 56: about 139 bits

_B64 = "[./0-9A-Za-z]"
_CRYPT_FORMS = (
    ("SHA-512", re.compile(rf"^\$6\$(rounds=(\d{{4,9}})\$)?{_B64}{{1,16}}\${_B64}{{86}}$")),
    ("SHA-256", re.compile(rf"^\$5\$(rounds=(\d{{4,9}})\$)?{_B64}{{1,16}}\${_B64}{{43}}$")),
    ("yescrypt", re.compile(rf"^\$(y|gy|7)\${_B64}+\${_B64}{{1,86}}\${_B64}{{43}}$")),
    ("bcrypt", re.compile(rf"^\$2[abxy]\$\d\d\${_B64}{{53}}$")),
    ("MD5", re.compile(rf"^\$1\${_B64}{{1,8}}\${_B64}{{22}}$")),
)
_LOCKED = frozenset({"!", "*", "!*"})


def make_salt(random_bytes: bytes) -> str:
    """16 crypt-alphabet characters from 16 random bytes."""
    if len(random_bytes) < 16:
        raise ValueError("a salt needs 16 random bytes")
    return "".join(SALT_ALPHABET[b % 64] for b in random_bytes[:16])


def hash_password(plain: str, *, salt: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """The SHA-512 crypt string (`$6$...`) that `chpasswd -e` takes."""
    hasher = sha512_crypt.using(salt=salt, rounds=rounds)
    result: str = hasher.hash(plain)
    return result


def generate_password(random_bytes: bytes) -> str:
    """A password of GENERATED_LENGTH symbols, unbiased, from the caller's random bytes."""
    out: list[str] = []
    limit = 256 - 256 % len(PASSWORD_ALPHABET)
    for byte in random_bytes:
        if byte < limit:
            out.append(PASSWORD_ALPHABET[byte % len(PASSWORD_ALPHABET)])
            if len(out) == GENERATED_LENGTH:
                return "".join(out)
    raise ValueError("not enough random bytes for a password; pass at least 64")


def verify_password(plain: str, crypt_hash: str) -> bool:
    """For tests and tools: does `plain` match a SHA-512 crypt string?"""
    result: bool = sha512_crypt.verify(plain, crypt_hash)
    return result


def validate_crypt_hash(value: str) -> str | None:
    """None when `value` is a crypt string a Linux guest accepts, else the reason.

    Accepted: SHA-512 (`$6$`), SHA-256 (`$5$`), yescrypt (`$y$`, Debian's default),
    bcrypt (`$2b$`), MD5 (`$1$`), and a locked account (`!` or `*`). The reason never
    quotes the value.
    """
    if value in _LOCKED:
        return None
    if len(value) > 512 or not value.isascii() or any(c in value for c in ":\n\r\t "):
        return "is not a crypt string"
    body = value[1:] if value.startswith("!") else value
    for _name, form in _CRYPT_FORMS:
        match = form.match(body)
        if match:
            return None
    return "is not a crypt string ($6$, $5$, $y$, $2b$, $1$, or ! / * for a locked account)"
