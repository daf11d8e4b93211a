"""Subject pseudonymisation: a keyed hash (HMAC-SHA256) of USUBJID.

The key comes from ``CT_PSEUDONYM_KEY``. Without it, a development key is generated once under
``$CT_HOME`` (mode 0600), so pseudonyms are stable across runs on one machine and never committed.
The same key must be used everywhere (pipeline, serving) for pseudonyms to join.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from typing import TYPE_CHECKING

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


MIN_SECRET_CHARS = 32  # what local_secret generates is 64 hex characters; anything much shorter is a mistake


class SecretError(RuntimeError):
    """A secret that is empty or too short: the message names where it came from, never its value."""


def _checked(value: str, source: str) -> str:
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        what = "is empty" if not value else f"holds {len(value)} characters, fewer than {MIN_SECRET_CHARS}"
        raise SecretError(f"the secret {source} {what}: set it to at least {MIN_SECRET_CHARS} random characters "
                          "(a file under $CT_HOME/secrets may be removed to have a new one generated)")
    return value


def write_secret_file(path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file (0600) beside it, fsync, rename, fsync of
    the folder. A full disk leaves no file, never an empty one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def local_secret(env_var: str, filename: str) -> str:
    """A secret from ``env_var``, else from ``$CT_HOME/secrets/<filename>``, generated there once (32 random bytes as
    hex; folder 0700, file 0600) when absent: under a lock, so processes starting together share one, and written
    atomically. An empty or short secret raises SecretError naming the variable or the file. Never committed."""
    import fcntl

    given = settings.secret(env_var)
    if given:
        return _checked(given, f"${env_var}")
    path = settings.ct_home() / "secrets" / filename
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        with open(path.parent / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not path.exists():  # another process may have made it while this one waited
                write_secret_file(path, secrets.token_hex(32))
    return _checked(path.read_text(), str(path))


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
