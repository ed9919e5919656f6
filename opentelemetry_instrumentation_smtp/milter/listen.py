"""The milter's listening addresses, in Postfix's milter socket syntax."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``--listen`` value: ``inet:HOST:PORT``, ``inet6:HOST:PORT`` or ``unix:PATH``."""

    family: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse Postfix's milter socket syntax; raise ``ValueError`` on anything else."""
        kind, _, rest = text.partition(":")
        if kind in ("unix", "local"):
            if not rest:
                raise ValueError(f"invalid listen address {text!r}: the socket path is missing")
            return cls("unix", path=rest)
        if kind in ("inet", "inet6"):
            host, _, port_text = rest.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not host or not port_text.isdigit() or int(port_text) > 65535:
                raise ValueError(
                    f"invalid listen address {text!r}: use inet:HOST:PORT with a port of 0 to 65535"
                )
            return cls("inet", host=host, port=int(port_text))
        raise ValueError(
            f"invalid listen address {text!r}: use inet:HOST:PORT, inet6:HOST:PORT or unix:PATH"
        )
