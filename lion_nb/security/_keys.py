"""Token signing keys: a shared HMAC secret, or an Ed25519 key pair.

Two chain schemes, each with a keyless *append* (anyone holding a token may
narrow it) and a keyed *check* that works on raw bytes, before any parsing:

``lion1`` (HMAC-SHA256, macaroon style)
    block = payload; ``sig0 = HMAC(key, b0)``, ``sigN = HMAC(sig(N-1), bN)``;
    the token carries the last signature. Checking needs the secret, and the
    secret can mint: every verifier is also an issuer.
``lion2`` (Ed25519, Biscuit style)
    block = ``signature(64) | next public key(32) | payload``; block 0 is signed
    by the root key, block N by the private key whose public half block N-1
    announced; the token carries the last private key (the *proof*) so a holder
    can append. Checking needs only the root public key.

An instance binding is a *mark* over the previous signature that only the
root key can make (an HMAC under the secret, or a root-key signature).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from lion_nb.errors import SecurityError, TokenError

__all__ = ["HMAC_PREFIX", "ED25519_PREFIX", "SigningKey", "HmacKey", "Ed25519Key",
           "append_block", "block_payload", "check_proof_shape", "tail_signature"]

HMAC_PREFIX = "lion1"
ED25519_PREFIX = "lion2"
_MIN_SECRET = 16
_HMAC_LEN = 32
_ED_SIG, _ED_PK, _ED_SK = 64, 32, 32
_ED_HEAD = _ED_SIG + _ED_PK
_CHAIN = b"lion2-block\x00"
_MARK = b"lion-bind\x00"


def _ed25519() -> Any:
    # Imported on first use: HMAC-only processes never pay for the cryptography import.
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return ed25519


def _raw_public(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def _raw_private(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    raw: bytes = private.private_bytes(serialization.Encoding.Raw,
                                       serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())
    return raw


# --- keyless chain operations -------------------------------------------------------------

def block_payload(prefix: str, block: bytes) -> bytes:
    """The JSON payload inside a wire block (TokenError if the block is too short)."""
    if prefix == HMAC_PREFIX:
        return block
    if len(block) <= _ED_HEAD:
        raise TokenError("token block is truncated")
    return block[_ED_HEAD:]


def check_proof_shape(prefix: str, proof: bytes) -> None:
    """TokenError unless ``proof`` has the scheme's length."""
    want = _HMAC_LEN if prefix == HMAC_PREFIX else _ED_SK
    if len(proof) != want:
        raise TokenError("token signature has the wrong length (truncated?)")


def tail_signature(prefix: str, blocks: tuple[bytes, ...], proof: bytes) -> bytes:
    """The signature that commits to every block so far (what a binding marks)."""
    return proof if prefix == HMAC_PREFIX else blocks[-1][:_ED_SIG]


def append_block(prefix: str, proof: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """(new block, new proof) after appending ``payload``; needs no key."""
    if prefix == HMAC_PREFIX:
        return payload, hmac.digest(proof, payload, "sha256")
    ed = _ed25519()
    current = ed.Ed25519PrivateKey.from_private_bytes(proof)
    nxt = ed.Ed25519PrivateKey.generate()
    nxt_pk = _raw_public(nxt.public_key())
    return current.sign(_CHAIN + nxt_pk + payload) + nxt_pk + payload, _raw_private(nxt)


# --- keys ---------------------------------------------------------------------------------

class SigningKey:
    """Interface of a token key: sign roots and marks, check chains and marks."""

    prefix: str
    key_id: str
    can_sign: bool

    def sign_root(self, payload: bytes) -> tuple[bytes, bytes]:
        """(block 0, proof) for a new root token."""
        raise NotImplementedError

    def check_chain(self, blocks: tuple[bytes, ...], proof: bytes) -> list[bytes]:
        """Check every block's signature on raw bytes; return each block's signature."""
        raise NotImplementedError

    def mark(self, data: bytes) -> bytes:
        """A tag over ``data`` that only the root key can make."""
        raise NotImplementedError

    def check_mark(self, data: bytes, tag: bytes) -> bool:
        """True if ``tag`` is this key's mark over ``data``."""
        raise NotImplementedError

    def _need_private(self) -> None:
        if not self.can_sign:
            raise SecurityError(f"key {self.key_id} is a public key: it verifies tokens "
                                "but cannot mint, bind or sign")


class HmacKey(SigningKey):
    """A shared secret (at least 16 bytes): every holder can both verify and mint."""

    prefix = HMAC_PREFIX
    can_sign = True

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < _MIN_SECRET:
            raise SecurityError(f"an authority key must be at least {_MIN_SECRET} bytes "
                                "(use Authority.generate())")
        self._secret = bytes(secret)
        self.key_id = hashlib.sha256(b"lion-kid\x00" + self._secret).hexdigest()[:12]

    def sign_root(self, payload: bytes) -> tuple[bytes, bytes]:
        """(block 0, proof) for a new root token."""
        return payload, hmac.digest(self._secret, payload, "sha256")

    def check_chain(self, blocks: tuple[bytes, ...], proof: bytes) -> list[bytes]:
        """Recompute the HMAC chain over the raw blocks; TokenError on any mismatch."""
        sigs, sig = [], self._secret
        for block in blocks:
            sig = hmac.digest(sig, block, "sha256")
            sigs.append(sig)
        if not hmac.compare_digest(sig, proof):
            raise TokenError("token has a bad signature (forged, altered or truncated)")
        return sigs

    def mark(self, data: bytes) -> bytes:
        """HMAC under the secret, domain-separated from the chain."""
        return hmac.digest(self._secret, _MARK + data, "sha256")

    def check_mark(self, data: bytes, tag: bytes) -> bool:
        """True if ``tag`` is this key's mark over ``data``."""
        return hmac.compare_digest(self.mark(data), tag)

    def __reduce__(self) -> Any:
        raise TypeError("a signing key is a secret and is not picklable")


class Ed25519Key(SigningKey):
    """An Ed25519 key: the private key mints; the public key alone only verifies."""

    prefix = ED25519_PREFIX

    def __init__(self, *, private: bytes | None = None, public: bytes | None = None) -> None:
        ed = _ed25519()
        try:
            if private is not None:
                self._private: Any = ed.Ed25519PrivateKey.from_private_bytes(bytes(private))
                self._public: Any = self._private.public_key()
            elif public is not None:
                self._private = None
                self._public = ed.Ed25519PublicKey.from_public_bytes(bytes(public))
            else:
                raise SecurityError("Ed25519Key needs private= or public= bytes")
        except (ValueError, TypeError) as exc:
            raise SecurityError(f"not a raw 32-byte Ed25519 key: {exc}") from None
        self.can_sign = self._private is not None
        self.public_bytes = _raw_public(self._public)
        """The raw 32-byte public key: give this to verifiers."""
        self.key_id = hashlib.sha256(b"lion-kid-ed25519\x00" + self.public_bytes).hexdigest()[:12]

    @classmethod
    def generate(cls) -> "Ed25519Key":
        """A fresh private key."""
        return cls(private=_raw_private(_ed25519().Ed25519PrivateKey.generate()))

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (keep it secret); SecurityError for a public key."""
        self._need_private()
        return _raw_private(self._private)

    def sign_root(self, payload: bytes) -> tuple[bytes, bytes]:
        """(block 0, proof) for a new root token, signed by the root key."""
        self._need_private()
        nxt = _ed25519().Ed25519PrivateKey.generate()
        nxt_pk = _raw_public(nxt.public_key())
        return (self._private.sign(_CHAIN + nxt_pk + payload) + nxt_pk + payload,
                _raw_private(nxt))

    def check_chain(self, blocks: tuple[bytes, ...], proof: bytes) -> list[bytes]:
        """Check each block against the key its predecessor announced; then the proof."""
        from cryptography.exceptions import InvalidSignature
        ed = _ed25519()
        public, sigs = self._public, []
        for block in blocks:
            if len(block) <= _ED_HEAD:
                raise TokenError("token block is truncated")
            sig, nxt = block[:_ED_SIG], block[_ED_SIG:_ED_HEAD]
            try:
                public.verify(sig, _CHAIN + block[_ED_SIG:])
                public = ed.Ed25519PublicKey.from_public_bytes(nxt)
            except (InvalidSignature, ValueError):
                raise TokenError("token has a bad signature (forged, altered or "
                                 "truncated)") from None
            sigs.append(sig)
        try:
            held = _raw_public(ed.Ed25519PrivateKey.from_private_bytes(proof).public_key())
        except ValueError:
            raise TokenError("token proof is malformed") from None
        if not hmac.compare_digest(held, _raw_public(public)):
            raise TokenError("token proof does not match its last block (truncated?)")
        return sigs

    def mark(self, data: bytes) -> bytes:
        """A root-key signature over ``data``."""
        self._need_private()
        sig: bytes = self._private.sign(_MARK + data)
        return sig

    def check_mark(self, data: bytes, tag: bytes) -> bool:
        """True if ``tag`` is the root key's signature over ``data``."""
        from cryptography.exceptions import InvalidSignature
        try:
            self._public.verify(tag, _MARK + data)
        except InvalidSignature:
            return False
        return True

    def __reduce__(self) -> Any:
        if self.can_sign:
            raise TypeError("a private signing key is a secret and is not picklable")
        return (_public_key, (self.public_bytes,))


def _public_key(public: bytes) -> Ed25519Key:
    return Ed25519Key(public=public)
