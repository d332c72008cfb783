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
PASSWORD_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"  # noqa: S105 (an alphabet)
GENERATED_LENGTH = 24  # 24 symbols of 56: about 139 bits

_B64 = "[./0-9A-Za-z]"
# The crypt strings a guest's chpasswd -e takes, as patterns for `re.fullmatch` that JSON
# Schema can state too (the OpenAPI document does); `!` before one locks the account.
CRYPT_PATTERNS = (
    ("SHA-512", rf"\$6\$(?:rounds=[0-9]{{4,9}}\$)?{_B64}{{1,16}}\${_B64}{{86}}"),
    ("SHA-256", rf"\$5\$(?:rounds=[0-9]{{4,9}}\$)?{_B64}{{1,16}}\${_B64}{{43}}"),
    ("yescrypt", rf"\$(?:y|gy|7)\${_B64}+\${_B64}{{1,86}}\${_B64}{{43}}"),
    ("bcrypt", rf"\$2[abxy]\$[0-9][0-9]\${_B64}{{53}}"),
    ("MD5", rf"\$1\${_B64}{{1,8}}\${_B64}{{22}}"),
)
LOCKED_HASHES = ("!", "*", "!*")
MAX_HASH_LENGTH = 512
_CRYPT_FORMS = tuple((name, re.compile(pattern)) for name, pattern in CRYPT_PATTERNS)
_LOCKED = frozenset(LOCKED_HASHES)


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
    if len(value) > MAX_HASH_LENGTH or not value.isascii() or any(c in value for c in ":\n\r\t "):
        return "is not a crypt string"
    body = value[1:] if value.startswith("!") else value
    for _name, form in _CRYPT_FORMS:
        match = form.fullmatch(body)
        if match:
            return None
    return "is not a crypt string ($6$, $5$, $y$, $2b$, $1$, or ! / * for a locked account)"
