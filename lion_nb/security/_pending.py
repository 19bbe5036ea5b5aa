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

    __slots__ = ("_root", "_instance_id", "_run_id", "_token_id", "_holder", "_token", "_lock")

    def __init__(self, root: Token, instance_id: str, run_id: str | None, *,
                 holder: str | None) -> None:
        self._root = root
        self._instance_id = instance_id
        self._run_id = run_id
        self._token_id = new_token_id()
        self._holder = holder or root.holder
        self._token: Token | None = None
        self._lock = threading.Lock()

    # Read-only: a GrantSet checks these against the verified root once, and they must
    # not change afterwards.
    @property
    def root(self) -> Token:
        """The token being bound."""
        return self._root

    @property
    def instance_id(self) -> str:
        """The instance it is bound to."""
        return self._instance_id

    @property
    def run_id(self) -> str | None:
        """The run it is bound to, if any."""
        return self._run_id

    @property
    def token_id(self) -> str:
        """The bound token's id, fixed now (audit records and ``revoke`` can name it)."""
        return self._token_id

    @property
    def chain(self) -> tuple[str, ...]:
        """Ids from the minted root to the bound token: revoking any of them revokes it."""
        return (*self._root.chain, self._token_id)

    @property
    def capability(self) -> Capability:
        """What it permits: binding changes neither capability nor expiry."""
        return self._root.capability

    @property
    def expires_at(self) -> float | None:
        """When it expires (the root's expiry)."""
        return self._root.expires_at

    @property
    def holder(self) -> str | None:
        """Who it was granted for, if named."""
        return self._holder

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
        return (f"<PendingBinding {self._token_id} of {self._root.token_id} to "
                f"{self.instance_id!r}, {state}>")
