"""PendingBinding: a token's binding to one run, announced now and signed when first needed.

``Authority.grant`` binds every token to the run it is granted to. Inside the
process nothing reads the bound token: the dispatch checks use the verified
capability, expiry and holder, which binding does not change. Only a token
that leaves the process (``narrow``, ``ctx.grant_tokens``, a Dask task,
``grants.tokens``) needs the signed string. So the grant announces the bound
token's id (audited, revocable at once) and the signing -- two MACs, a JSON
caveat, base64 -- happens on first use, with that same id::

    pending = PendingBinding(root, "inst-1", run_id, holder=None)
    pending.token_id                         # known now: audit records and revoke name it
    pending.token(authority.sign_binding)    # the signed, bound Token (made once)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from lion_nb.security._capability import Capability
from lion_nb.security._token import Token, new_token_id

__all__ = ["PendingBinding"]


class PendingBinding:
    """A verified token's binding to ``instance_id`` (and ``run_id``), signed on first use.

    Data only: the signature comes from whoever calls :meth:`token` with the
    authority's ``sign_binding`` (a GrantSet passes its own issuer's), so a
    binding built by hand cannot slip in another token.
    """

    __slots__ = ("root", "instance_id", "run_id", "token_id", "chain", "capability",
                 "expires_at", "holder", "_token", "_lock")

    def __init__(self, root: Token, instance_id: str, run_id: str | None, *,
                 holder: str | None) -> None:
        self.root = root
        """The verified token being bound."""
        self.instance_id = instance_id
        """The instance it is bound to."""
        self.run_id = run_id
        """The run it is bound to, if any."""
        self.token_id = new_token_id()
        """The bound token's id, fixed now (audit records and ``revoke`` can name it)."""
        self.chain = (*root.chain, self.token_id)
        """Ids from the minted root to the bound token: revoking any of them revokes it."""
        self.capability: Capability = root.capability
        """What it permits: binding changes neither capability nor expiry."""
        self.expires_at = root.expires_at
        """When it expires (the root's expiry)."""
        self.holder = holder or root.holder
        """Who it was granted for, if named."""
        self._token: Token | None = None
        self._lock = threading.Lock()

    def token(self, sign: Callable[[Token, str, str | None, str], Token]) -> Token:
        """The signed, bound token: ``sign(root, instance_id, run_id, token_id)`` on the first
        call, the same token afterwards."""
        tok = self._token
        if tok is None:
            with self._lock:
                tok = self._token
                if tok is None:
                    tok = self._token = sign(self.root, self.instance_id, self.run_id,
                                             self.token_id)
        return tok

    def __repr__(self) -> str:
        state = "signed" if self._token is not None else "not signed yet"
        return (f"<PendingBinding {self.token_id} of {self.root.token_id} to "
                f"{self.instance_id!r}, {state}>")
