"""TLS client contexts that trust the system's CAs, each CA read only when a handshake needs it.

`ssl.create_default_context()` parses the system's whole CA bundle up front: ~140 certificates,
~0.75 MiB of the sidecar's RSS for each context that talks to an https provider, a collector or
Redis, in every pod. Where the system also keeps its CAs in an OpenSSL hashed directory
(Debian, Ubuntu and Alpine do; the image's base is Debian), OpenSSL looks a CA up there by its
subject's hash during the handshake and keeps it: a sidecar that calls two providers holds the
two or three CAs they chain to.

An explicit SSL_CERT_FILE is the operator's choice of a bundle: then the bundle, loaded whole, as
before. Without a hashed directory (e.g. a system with a bundle file only) the same.
"""

from __future__ import annotations

import os
import re
import ssl

# What `openssl rehash` names a CA certificate: its subject hash and a collision counter.
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def system_trust_context() -> ssl.SSLContext:
    """A verifying client context (hostname checked) with the system's CAs; reads a directory.

    Call it at start-up or in a worker thread: it lists the CA directory (and, without one,
    parses the bundle), too slow for the event loop."""
    paths = ssl.get_default_verify_paths()
    if paths.capath and not os.environ.get(paths.openssl_cafile_env) and _is_hashed(paths.capath):
        return ssl.create_default_context(capath=paths.capath)
    return ssl.create_default_context()


def _is_hashed(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(_HASHED_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False
