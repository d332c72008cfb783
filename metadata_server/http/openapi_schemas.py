"""The admin API's JSON schemas: what a guest object may hold, stated with the very
patterns and limits the validators enforce (imported from model.py and passwords.py), so
that a request valid by the schema is never refused for its shape.

Where a rule lives in the validator as code rather than a pattern, this module restates
it as a pattern JSON Schema can carry: a guest's IPv4 addresses (`parse_ipv4`'s refused
ranges) and OpenSSH keys (the base64 of each key type's header is fixed, so the blob's
type can be checked by its first characters). Tests hold each restatement to its
validator. What no schema can state is said in a `description`: rules between two fields
(the gateway inside the guest's network, neither the network's nor its broadcast
address), the size of user-data in bytes, a `#cloud-config` being a YAML mapping, and
the registry's uniqueness (409).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from metadata_server.errors import ErrorCode
from metadata_server.model import (
    DOMAIN_PATTERN,
    FORBIDDEN_CHARACTERS,
    HOSTNAME_PATTERN,
    MAC_PATTERN,
    MAX_DNS_SERVERS,
    MAX_DOMAIN_LENGTH,
    MAX_HOSTNAME_LENGTH,
    MAX_METADATA_ITEMS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_VALUE,
    MAX_PASSWORD_LENGTH,
    MAX_PREFIX,
    MAX_SSH_KEY_COMMENT,
    MAX_SSH_KEYS,
    MAX_USER_DATA_BYTES,
    METADATA_KEY_PATTERN,
    METADATA_VALUE_PATTERN,
    MIN_PREFIX,
    PASSWORD_PATTERN,
    SSH_KEY_TYPES,
    SURROGATES,
    State,
)
from metadata_server.passwords import CRYPT_PATTERNS, LOCKED_HASHES, MAX_HASH_LENGTH


def anchored(pattern: str) -> str:
    """A fullmatch pattern as JSON Schema states it: anchored (a JSON Schema pattern
    searches), and without the lone-surrogate range, which validators that read patterns
    by code point (Rust's regex, under schemathesis) refuse as no regex at all. A lone
    surrogate can only reach the server as a JSON `\\udXXX` escape; the descriptions
    say those are refused."""
    return f"^(?:{pattern.replace(SURROGATES, '')})$"


# --- IPv4 host addresses ------------------------------------------------------------------
# What parse_ipv4 lets through, as text: no leading zeros; not 0.0.0.0/8, loopback
# 127.0.0.0/8, link-local 169.254.0.0/16 (the metadata address is in it), multicast
# 224.0.0.0/4 or reserved 240.0.0.0/4.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_FIRST_OCTET = (
    r"(?:[1-9]|[1-9][0-9]|1[01][0-9]|12[0-6]|12[89]|1[3-5][0-9]|16[0-8]|1[7-9][0-9]"
    r"|2[01][0-9]|22[0-3])"
)
_NOT_254 = r"(?:25[0-35]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
HOST_IPV4_PATTERN = rf"(?:{_FIRST_OCTET}\.{_OCTET}|169\.{_NOT_254})\.{_OCTET}\.{_OCTET}"


# --- OpenSSH public keys ------------------------------------------------------------------
_B64_CHAR = "[A-Za-z0-9+/]"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MIN_KEY_DATA = 16  # bytes after the type name in the blob, as parse_ssh_key wants


def _one_of(values: list[int]) -> str:
    return "[" + "".join(re.escape(_ALPHABET[v]) for v in values) + "]"


def base64_starting_with(head: bytes, at_least: int) -> str:
    """A pattern of the padded base64 of `head` followed by `at_least` or more bytes."""
    whole = len(head) - len(head) % 3
    text = re.escape(base64.b64encode(head[:whole]).decode())
    rest = head[whole:]
    if len(rest) == 1:  # 8 bits fixed: one character, and 2 bits of the next
        text += re.escape(_ALPHABET[rest[0] >> 2])
        text += _one_of([(rest[0] & 3) << 4 | n for n in range(16)]) + _B64_CHAR + "{2}"
        at_least -= 2
    elif len(rest) == 2:  # 16 bits fixed: two characters, and 4 bits of the third
        text += re.escape(_ALPHABET[rest[0] >> 2])
        text += re.escape(_ALPHABET[(rest[0] & 3) << 4 | rest[1] >> 4])
        text += _one_of([(rest[1] & 15) << 2 | n for n in range(4)]) + _B64_CHAR
        at_least -= 1
    groups = -(-max(at_least, 0) // 3)
    return text + f"(?:{_B64_CHAR}{{4}}){{{groups},}}(?:{_B64_CHAR}{{2}}==|{_B64_CHAR}{{3}}=)?"


def _ssh_key_pattern() -> str:
    """`type base64 [comment]` for each type, the blob starting with that type's header."""
    forms = [
        re.escape(kind)
        + " "
        + base64_starting_with(len(kind).to_bytes(4, "big") + kind.encode(), MIN_KEY_DATA)
        for kind in SSH_KEY_TYPES
    ]
    comment = f"(?: [^{FORBIDDEN_CHARACTERS}]{{0,{MAX_SSH_KEY_COMMENT}}})?"
    return f"(?:{'|'.join(forms)}){comment}"


SSH_KEY_PATTERN = _ssh_key_pattern()
CRYPT_HASH_PATTERN = "|".join(
    [*(re.escape(locked) for locked in LOCKED_HASHES)]
    + [f"!?(?:{pattern})" for _, pattern in CRYPT_PATTERNS]
)


# --- the schemas --------------------------------------------------------------------------


def _string(pattern: str | None, max_length: int | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern is not None:
        schema["pattern"] = anchored(pattern)
    if max_length is not None:
        schema["maxLength"] = max_length
    return {**schema, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


MAC = _string(
    MAC_PATTERN,
    description="a unicast MAC address, not all zero: six hex pairs, all ':' or all '-'",
    examples=["02:00:c6:12:00:0a"],
)
_IPV4 = _string(
    HOST_IPV4_PATTERN,
    format="ipv4",
    description="an IPv4 host address: not 0/8, loopback, link-local, multicast or reserved",
)
_DOMAIN = _string(DOMAIN_PATTERN, MAX_DOMAIN_LENGTH + 1, description="RFC 1123 labels")
_IPV4_CONFIG_RULES = (
    "The address may not be the network or broadcast address of address/prefix (for a "
    "prefix up to 30); the gateway must be inside that network, neither of those two "
    "addresses, nor the guest's own. The address and hostname+domain are each unique in "
    "the registry (409)."
)


def _ipv4_config(*, patch: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "description": _IPV4_CONFIG_RULES,
        "properties": {
            "address": _IPV4,
            "prefix": {"type": "integer", "minimum": MIN_PREFIX, "maximum": MAX_PREFIX},
            "gateway": _nullable(_IPV4),
        },
    }
    if not patch:
        schema["required"] = ["address", "prefix"]
    return schema


def _guest_fields(*, patch: bool) -> dict[str, Any]:
    """The properties of a guest object; in a merge patch, null removes an optional one."""

    def optional(schema: dict[str, Any]) -> dict[str, Any]:
        return _nullable(schema) if patch else schema

    return {
        "hostname": _string(
            HOSTNAME_PATTERN, MAX_HOSTNAME_LENGTH, description="one RFC 1123 label"
        ),
        "domain": _nullable(_DOMAIN),
        "ipv4": _ipv4_config(patch=patch),
        "dns": optional({"type": "array", "maxItems": MAX_DNS_SERVERS, "items": _IPV4}),
        "password": _string(
            PASSWORD_PATTERN,
            MAX_PASSWORD_LENGTH,
            writeOnly=True,
            description="plain; hashed at once (SHA-512 crypt), never stored or shown",
        ),
        "password_hash": _string(
            CRYPT_HASH_PATTERN,
            MAX_HASH_LENGTH,
            writeOnly=True,
            description="a crypt string ($6$, $5$, $y$, $2b$, $1$), ! or * (locked), "
            "or ! before a crypt string",
        ),
        "ssh_keys": optional(
            {
                "type": "array",
                "maxItems": MAX_SSH_KEYS,
                "items": _string(
                    SSH_KEY_PATTERN,
                    description="an OpenSSH public key: type, base64 blob of that type "
                    f"(at least {MIN_KEY_DATA} bytes of key data), optional comment",
                ),
            }
        ),
        "user_data": optional(
            _string(
                None,  # USER_DATA_PATTERN refuses lone surrogates only: see anchored()
                MAX_USER_DATA_BYTES,
                description=f"any text of at most {MAX_USER_DATA_BYTES} bytes as UTF-8 "
                "(no lone surrogate); one that starts with #cloud-config must be a YAML "
                "mapping",
            )
        ),
        "metadata": optional(
            {
                "type": "object",
                "maxProperties": MAX_METADATA_ITEMS,
                "propertyNames": _string(METADATA_KEY_PATTERN, MAX_METADATA_KEY_LENGTH),
                "additionalProperties": _string(METADATA_VALUE_PATTERN, MAX_METADATA_VALUE),
            }
        ),
        "host": _nullable({**_DOMAIN, "description": "the Dom0 that runs it"}),
    }


_ONE_PASSWORD = {"not": {"required": ["password", "password_hash"]}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {
                "type": "string",
                "enum": [code.value for code in ErrorCode],
                "description": "a short code (see ErrorCode)",
            },
            "field": {"type": ["string", "null"]},
            "detail": {"type": "string"},
            "holder": {"type": "string", "description": "409: the MAC that holds the field"},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "field": {"type": ["string", "null"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "IPv4": {
        "type": "object",
        "required": ["address", "prefix"],
        "properties": {
            "address": {"type": "string", "format": "ipv4"},
            "prefix": {"type": "integer", "minimum": MIN_PREFIX, "maximum": MAX_PREFIX},
            "gateway": {"type": ["string", "null"], "format": "ipv4"},
        },
    },
    "VMInput": {
        "type": "object",
        "required": ["hostname", "ipv4"],
        "additionalProperties": False,
        "description": "give password or password_hash, not both",
        "properties": _guest_fields(patch=False),
        **_ONE_PASSWORD,
    },
    "VMImportRow": {
        "type": "object",
        "required": ["mac", "hostname", "ipv4"],
        "additionalProperties": False,
        "description": "a guest with its MAC; give password or password_hash, not both",
        "properties": {"mac": MAC, **_guest_fields(patch=False)},
        **_ONE_PASSWORD,
    },
    "VMPatch": {
        "type": "object",
        "additionalProperties": False,
        "description": "a JSON merge patch (RFC 7396) of a guest: null removes an optional "
        "field; the result must be a valid guest; a password replaces the stored hash",
        "properties": _guest_fields(patch=True),
        **_ONE_PASSWORD,
    },
    "VM": {
        "type": "object",
        "properties": {
            "mac": {"type": "string"},
            "hostname": {"type": "string"},
            "domain": {"type": ["string", "null"]},
            "ipv4": {"$ref": "#/components/schemas/IPv4"},
            "dns": {"type": "array", "items": {"type": "string"}},
            "ssh_keys": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "host": {"type": ["string", "null"]},
            "password_set": {"type": "boolean"},
            "user_data_bytes": {"type": "integer"},
            "instance_id": {"type": "string", "format": "uuid"},
            "state": {"$ref": "#/components/schemas/State"},
            "state_times": {"type": "object", "additionalProperties": {"type": "string"}},
            "message": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "launch": {
                "type": ["object", "null"],
                "description": "what `vm launch` made: image, image_id, delta, xl_config, "
                "destroyed_at (set by `vm destroy --keep-record`)",
            },
            "generated_password": {
                "type": "string",
                "description": "only in the response that created the guest without a password",
            },
        },
    },
    "State": {
        "type": "string",
        "enum": [state.value for state in State],
    },
    "Status": {
        "type": "object",
        "properties": {
            "mac": {"type": "string"},
            "instance_id": {"type": "string"},
            "state": {"$ref": "#/components/schemas/State"},
            "state_times": {"type": "object", "additionalProperties": {"type": "string"}},
            "message": {"type": ["string", "null"]},
        },
    },
}
