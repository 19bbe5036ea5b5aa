"""The secret a saga manager shares with its services, and the signed wire format it keys.

Commands and replies cross the broker as ``{"v": 1, "body": <JSON text>,
"mac": <hex>}``. The MAC (HMAC-SHA256) is checked over the body's raw bytes
before the body is parsed, so nothing unauthenticated is ever interpreted.
Each service has its own key, derived from the manager's (HKDF-SHA256 with
the service name), so a service can neither read another service's tokens
nor answer in its name; give a remote service only ``key.for_service(name)``.

A command's capability tokens are sealed (AES-GCM, bound to the command id)
before the command is published, so an event store keeps no usable token
and no other subscriber can read one.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from typing import Any, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ...errors import ConfigError, SagaReplyError

__all__ = ["ENV_VAR", "SagaKey", "WIRE_VERSION"]

WIRE_VERSION = 1
#: Where ``SagaKey.from_env()`` (and so a manager or service given no key) finds the
#: secret, hex-encoded: how a service process started by a supervisor gets it.
ENV_VAR = "LION_NB_SAGA_KEY"
_MIN_SECRET = 32
_MAX_BODY = 16 * 1024 * 1024     # refuse to hash or parse anything larger


def _derive(secret: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"lion-nb saga {info}".encode()).derive(secret)


class SagaKey:
    """The shared secret of a saga manager and its services (32 bytes or more).

    ``SagaKey.generate()`` makes one; keep its ``secret`` wherever you keep
    secrets and build the same key in every process with ``SagaKey(secret)``.
    ``for_service(name)`` is the narrower key one service needs.
    """

    __slots__ = ("_secret", "service", "_mac", "_seal")

    def __init__(self, secret: bytes, *, service: str | None = None) -> None:
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET:
            raise ConfigError(f"a saga key needs at least {_MIN_SECRET} secret bytes, got "
                              f"{len(secret) if isinstance(secret, bytes) else type(secret)}",
                              field="key")
        self._secret = secret
        #: The one service this key speaks for, or None for a manager's key.
        self.service = service
        # Only a service's key signs and seals; a manager's key derives those per service.
        self._mac = _derive(secret, "mac") if service is not None else None
        self._seal = AESGCM(_derive(secret, "seal")) if service is not None else None

    @classmethod
    def generate(cls) -> "SagaKey":
        """A new random key."""
        return cls(os.urandom(32))

    @classmethod
    def from_env(cls, variable: str = ENV_VAR) -> "SagaKey | None":
        """The key whose secret is hex in the environment ``variable``, or None if unset."""
        text = os.environ.get(variable)
        if not text:
            return None
        try:
            secret = bytes.fromhex(text.strip())
        except ValueError:
            raise ConfigError(f"${variable} must be the saga key's secret in hex",
                              field=variable) from None
        return cls(secret)

    @property
    def secret(self) -> bytes:
        """The secret bytes (to store in a secret manager; never log them)."""
        return self._secret

    def for_service(self, service: str) -> "SagaKey":
        """The key of one service: signs and opens only that service's messages."""
        if self.service is not None:
            if service != self.service:
                raise ConfigError(f"this saga key belongs to service {self.service!r}, not "
                                  f"{service!r}", field="key")
            return self
        return SagaKey(_derive(self._secret, f"service {service}"), service=service)

    # -- the wire --------------------------------------------------------------------

    def _sign(self, kind: str, body: bytes) -> str:
        if self._mac is None:
            raise ConfigError("a manager's saga key signs nothing itself: use "
                              "key.for_service(name)", field="key")
        # hmac.digest is the one-shot C path: no HMAC object per message.
        return hmac.digest(self._mac, kind.encode() + b"\0" + body, "sha256").hex()

    def _envelope(self, kind: str, content: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(content, separators=(",", ":"), allow_nan=False)
        # "service" only picks the key to check with: a wrong one fails the MAC.
        return {"v": WIRE_VERSION, "service": self.service, "body": body,
                "mac": self._sign(kind, body.encode())}

    def _open(self, kind: str, payload: Any) -> dict[str, Any]:
        """The body of a signed ``payload``; SagaReplyError unless its MAC is right."""
        if not isinstance(payload, Mapping) or payload.get("v") != WIRE_VERSION:
            raise SagaReplyError(f"saga {kind} is not a signed v{WIRE_VERSION} envelope",
                                 step=None)
        body, mac = payload.get("body"), payload.get("mac")
        if not isinstance(body, str) or not isinstance(mac, str) or len(body) > _MAX_BODY:
            raise SagaReplyError(f"saga {kind} envelope has no usable body and mac", step=None)
        raw = body.encode()
        if not hmac.compare_digest(self._sign(kind, raw), mac):
            raise SagaReplyError(f"saga {kind} signature does not match (forged, altered or "
                                 "another key)", step=None)
        try:
            content = json.loads(raw)
        except ValueError as exc:
            raise SagaReplyError(f"signed saga {kind} body is not JSON: {exc}",
                                 step=None) from None
        if not isinstance(content, dict):
            raise SagaReplyError(f"signed saga {kind} body is not an object", step=None)
        return content

    def _sealer(self) -> AESGCM:
        if self._seal is None:
            raise ConfigError("a manager's saga key seals nothing itself: use "
                              "key.for_service(name)", field="key")
        return self._seal

    def seal_command(self, content: Mapping[str, Any]) -> dict[str, Any]:
        """Sign a command's dict (``tokens`` sealed) as an event payload."""
        data = dict(content)
        tokens = data.pop("tokens", ())
        if tokens:
            nonce = os.urandom(12)
            sealed = self._sealer().encrypt(nonce, json.dumps(list(tokens)).encode(),
                                        str(data["command_id"]).encode())
            data["sealed_tokens"] = base64.b64encode(nonce + sealed).decode()
        return self._envelope("command", data)

    def open_command(self, payload: Any) -> dict[str, Any]:
        """A command's dict (``tokens`` unsealed) from a payload; SagaReplyError if not genuine."""
        data = self._open("command", payload)
        sealed = data.pop("sealed_tokens", None)
        tokens: list[str] = []
        if sealed is not None:
            sealer = self._sealer()
            try:
                raw = base64.b64decode(sealed, validate=True)
                tokens = json.loads(sealer.decrypt(raw[:12], raw[12:],
                                                       str(data.get("command_id")).encode()))
            except (ValueError, InvalidTag) as exc:
                raise SagaReplyError(f"sealed tokens of command {data.get('command_id')} do "
                                     f"not open: {type(exc).__name__}", step=None) from None
        data["tokens"] = tokens
        return data

    def seal_reply(self, command: Mapping[str, Any], *, ok: bool, result: Any = None,
                   error: str | None = None) -> dict[str, Any]:
        """The signed reply to an opened ``command``: its result, or its error text."""
        return self._envelope("reply", {
            "command_id": command["command_id"], "attempt": command["attempt"],
            "service": self.service, "ok": ok, "result": result, "error": error})

    def open_reply(self, payload: Any) -> dict[str, Any]:
        """A reply's dict from a payload; SagaReplyError unless it is genuine."""
        return self._open("reply", payload)

    def __repr__(self) -> str:
        who = "manager" if self.service is None else f"service {self.service!r}"
        return f"<SagaKey for {who}>"
