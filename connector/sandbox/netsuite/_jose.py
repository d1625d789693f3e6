"""``authlib.jose`` without its import-time deprecation warning.

Authlib 1.7+ warns on ``import authlib.jose`` (it points at joserfc) and installs an
"always" filter for that warning, so under ``-W error`` the first import prints it and a
later one may raise, depending on import order. The sandbox uses authlib.jose on
purpose (the project's declared dependency), so the import is wrapped once here.
"""

from __future__ import annotations

import warnings

import authlib.deprecate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.jose import JoseError, JsonWebKey, JsonWebToken

__all__ = ["JoseError", "JsonWebKey", "JsonWebToken"]
