"""The model server's bearer token: ``$CT_SERVING_TOKEN``, else ``$CT_HOME/secrets/serving.token`` (generated
once, 0600). Here, below the server, so that the server and its clients (the deployment assets, the ``ct``
command) read it the same way without importing one another."""

from __future__ import annotations

from ct_assets.core.privacy import local_secret

TOKEN_ENV, TOKEN_FILE = "CT_SERVING_TOKEN", "serving.token"


def serving_token() -> str:
    """The bearer token of the model server, for the server and its clients alike."""
    return local_secret(TOKEN_ENV, TOKEN_FILE)
