"""API keys -> who is calling. Keys are compared in constant time and never logged.

Each stored key is kept only as its SHA-256 digest; a presented key is hashed once and
compared against every digest with `hmac.compare_digest`, without stopping at a match,
so the time taken says nothing about which key (or how much of one) was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

GENERATED_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """The caller: a tenant owns sessions and avatars; admin may also drain and see all."""

    tenant: str
    admin: bool = False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """All accepted keys; `generated` holds a key made at start when none was configured."""

    def __init__(self, tenant_keys: dict[str, str], admin_key: str | None = None) -> None:
        self.generated: str | None = None
        if not tenant_keys and not admin_key:
            self.generated = secrets.token_urlsafe(24)
            admin_key = self.generated
            tenant_keys = {GENERATED_TENANT: self.generated}
        entries = [(_digest(k), Principal(t)) for t, k in tenant_keys.items() if k != admin_key]
        if admin_key:  # the admin key may also be one tenant's key: that tenant is then admin
            admin_tenant = next((t for t, k in tenant_keys.items() if k == admin_key), "admin")
            entries.append((_digest(admin_key), Principal(admin_tenant, admin=True)))
        self._entries = entries

    @property
    def tenants(self) -> list[str]:
        return sorted({p.tenant for _, p in self._entries})

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an `Authorization: Bearer <key>` header value, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = _digest(key.strip())
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found
