"""Subject pseudonymisation: a keyed hash (HMAC-SHA256) of USUBJID.

The key comes from ``CT_PSEUDONYM_KEY``. Without it, a development key is generated once under
``$CT_HOME`` (mode 0600), so pseudonyms are stable across runs on one machine and never committed.
The same key must be used everywhere (pipeline, serving) for pseudonyms to join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import hmac
import os
import re
import secrets


from ct_assets import settings

if TYPE_CHECKING:
    import pandas as pd

SUBJECT_KEY = "SUBJECT_KEY"
PREFIX = "S-"
DIGEST_CHARS = 20  # 80 bits: collision-free for any realistic trial, short enough to read
# The one definition of what a pseudonym looks like (the server accepts nothing else as a subject key).
PSEUDONYM_RE = re.compile(rf"^{re.escape(PREFIX)}[0-9a-f]{{{DIGEST_CHARS}}}\Z")


def is_pseudonym(value: object) -> bool:
    return isinstance(value, str) and len(value) == len(PREFIX) + DIGEST_CHARS and PSEUDONYM_RE.match(value) is not None


def local_secret(env_var: str, filename: str) -> str:
    """A secret from ``env_var``, else from ``$CT_HOME/secrets/<filename>``, generated there once
    (32 random bytes as hex, folder 0700, file 0600) when absent. Never committed."""
    given = settings.secret(env_var)
    if given:
        return given
    path = settings.ct_home() / "secrets" / filename
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def pseudonym_key() -> bytes:
    return local_secret("CT_PSEUDONYM_KEY", "pseudonym.key").encode()


def pseudonymise(ids: pd.Series, key: bytes | None = None) -> pd.Series:
    """Map raw subject ids to stable pseudonyms; nulls stay null."""
    key = key or pseudonym_key()
    uniq = ids.dropna().unique()
    mapping = {
        raw: PREFIX + hmac.new(key, str(raw).encode(), hashlib.sha256).hexdigest()[:DIGEST_CHARS]
        for raw in uniq
    }
    return ids.map(mapping)


SPLIT_BUCKET = "SPLIT_BUCKET"
BUCKETS = 2**16


def split_bucket(ids: pd.Series) -> pd.Series:
    """A bucket 0..65535 from an unkeyed hash of the raw id, for train/holdout assignment.

    The holdout must not depend on the secret key, or every machine would evaluate on other
    subjects. 16 bits are too few to enumerate ids back from (every bucket has many possible
    USUBJIDs); like the quasi-identifiers DM keeps (age, sex, dates), it only links for someone
    who already holds the raw study, who has the ids anyway.
    """
    return ids.map(lambda raw: int(hashlib.sha256(str(raw).encode()).hexdigest()[:8], 16) % BUCKETS)


def replace_subject_ids(df: pd.DataFrame, key: bytes | None = None) -> pd.DataFrame:
    """Swap USUBJID for SUBJECT_KEY and drop the other direct identifiers SDTM carries."""
    out = df.drop(columns=[c for c in ("SUBJID",) if c in df.columns])
    if "USUBJID" in out.columns:
        keys = pseudonymise(out["USUBJID"], key)
        out = out.drop(columns=["USUBJID"])
        out.insert(0, SUBJECT_KEY, keys)
    return out
