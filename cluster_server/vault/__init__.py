"""Secrets at rest: the store seals the text of provider entities and cluster specs (which embed
their provider) with Fernet (AES-128-CBC with an HMAC-SHA256, from ``cryptography``), under a
key kept beside the store in SHOAL_HOME, so a copy of ``shoal.db`` alone reveals no credential.

The whole text is sealed rather than only the fields a plugin marks sensitive: the store sits
below the plugins and cannot ask them, and a template's config may hold passwords too. Masking in
the API, logs and export is a separate, outer layer and stays.
"""

import contextlib
import os
import pathlib

from cryptography.fernet import Fernet, InvalidToken

from cluster_server.errors import StoreKeyError

# Sealed text starts with this, so a row written by an earlier release (plain JSON, which always
# starts with "{") is told apart and sealed in place at the next start.
PREFIX = "fernet:"
KEY_NAME = "store.key"


class Vault:
    def __init__(self, key):
        self._fernet = Fernet(key)

    @classmethod
    def beside(cls, store_path, create=True):
        """The vault whose key file sits next to the store file (made, mode 0600, if absent
        and ``create``)."""
        path = pathlib.Path(store_path).with_name(KEY_NAME)
        try:
            return cls(path.read_bytes().strip())
        except FileNotFoundError:
            if not create:
                raise
        except ValueError:
            raise StoreKeyError(f"{path} is not a Fernet key; restore it from a backup",
                            {"field": "store.key", "reason": "not a key"}) from None
        _write_new_key(path)
        return cls(path.read_bytes().strip())

    def seal(self, text):
        return PREFIX + self._fernet.encrypt(text.encode()).decode("ascii")

    def unseal(self, text):
        """The plain text of a sealed value; plain text (an earlier release's row) as it is."""
        if not text.startswith(PREFIX):
            return text
        try:
            return self._fernet.decrypt(text[len(PREFIX):].encode("ascii")).decode()
        except InvalidToken:
            raise StoreKeyError(f"the store's secrets were sealed with another key than "
                            f"{KEY_NAME}; restore the key that belongs to this shoal.db",
                            {"field": "store.key", "reason": "wrong key"}) from None


def is_sealed(text):
    return text.startswith(PREFIX)


def _write_new_key(path):
    """Write a fresh key atomically and only if none exists: two servers starting at once on one
    home end up with the same key (the loser of the link reads the winner's)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(Fernet.generate_key())
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
