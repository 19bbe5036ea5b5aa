"""PendingBinding: a token's binding to one run, announced now and signed when first needed.

``Authority.grant`` binds every token to the run it is granted to. Inside the
process nothing reads the bound token: the dispatch checks use the verified
capability, expiry and holder, which binding does not change. Only a token
that leaves the process (``narrow``, ``ctx.grant_tokens``, a Dask task,
``grants.tokens``) needs the signed string. So the grant announces the bound
token's id (audited, revocable at once) and the signing -- two MACs, a JSON
caveat, base64 -- happens on first use, with that same id::

    pending = PendingBinding(root, "inst-1", run_id)
    pending.token_id                         # known now: audit records and revoke name it
    pending.token(authority.sign_binding)    # the signed, bound Token (made once)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lion_nb.security._capability import Capability
from lion_nb.security._token import Token, new_token_id

__all__ = ["PendingBinding"]


@dataclass(frozen=True, eq=False)
class PendingBinding:
    """A token's binding to ``instance_id`` (and ``run_id``), signed on first use.

    Data only, and frozen: a GrantSet checks ``root`` against its verified text
    once, and the signature comes from whoever calls :meth:`token` with an
    authority's ``sign_binding`` (a GrantSet passes its own issuer's), so a
    binding built by hand cannot slip in another token or widen one.
    """

    root: Token
    """The token being bound."""
    instance_id: str
    """The instance it is bound to."""
    run_id: str | None = None
    """The run it is bound to, if any."""
    holder: str | None = None
    """Who it was granted for, if named."""
    token_id: str = field(default_factory=new_token_id, init=False)
    """The bound token's id, fixed now (audit records and ``revoke`` can name it)."""
    _signed: list[Token] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def chain(self) -> tuple[str, ...]:
        """Ids from the minted root to the bound token: revoking any of them revokes it."""
        return (*self.root.chain, self.token_id)

    @property
    def capability(self) -> Capability:
        """What it permits: binding changes neither capability nor expiry."""
        return self.root.capability

    @property
    def expires_at(self) -> float | None:
        """When it expires (the root's expiry)."""
        return self.root.expires_at

    def token(self, sign: Callable[[Token, str, str | None, str], Token]) -> Token:
        """The signed, bound token: ``sign(root, instance_id, run_id, token_id)`` on the first
        call, the same token afterwards."""
        if not self._signed:
            with self._lock:
                if not self._signed:
                    self._signed.append(sign(self.root, self.instance_id, self.run_id,
                                             self.token_id))
        return self._signed[0]
