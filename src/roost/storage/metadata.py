"""The metadata store: topics now; subscriptions, exchanges and users later.

One small JSON document, ``metadata.json``, holding namespaces of named entries. Every change is
a transaction that writes the whole document with ``replace_atomically`` (temp file, fsync,
rename, fsync directory): after a crash the store holds the state before the transaction or
after it, never a mix. Metadata changes are rare and small, so rewriting the document is cheap
and leaves nothing to compact.

Before each commit the document as it was is kept as ``metadata.json.prev`` (also replaced
atomically): if the file is ever damaged (a bad disk, an editor), ``open`` refuses with
``CorruptMetadata`` naming both files, and restoring the copy loses only the last change.

    store = MetadataStore.open(fs, "/data/metadata.json")
    with store.transaction() as txn:
        txn.put("topics", "orders", {"partitions": 3})
    store.get("topics", "orders")   # {'partitions': 3}
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from roost.errors import CorruptMetadata, StorageFailure
from roost.storage.fs import LocalFS

FORMAT_VERSION = 1
PREVIOUS_SUFFIX = ".prev"


class _Document(msgspec.Struct):
    format: int
    version: int
    namespaces: dict[str, dict[str, Any]]


class Transaction:
    def __init__(self, namespaces: dict[str, dict[str, Any]]) -> None:
        self.namespaces = namespaces

    def put(self, namespace: str, name: str, value: Any) -> None:
        self.namespaces.setdefault(namespace, {})[name] = value

    def delete(self, namespace: str, name: str) -> None:
        self.namespaces.get(namespace, {}).pop(name, None)

    def get(self, namespace: str, name: str) -> Any:
        return self.namespaces.get(namespace, {}).get(name)


class MetadataStore:
    def __init__(self, fs: LocalFS, path: str, document: _Document) -> None:
        self._fs = fs
        self._path = path
        self._document = document

    @classmethod
    def open(cls, fs: LocalFS, path: str) -> MetadataStore:
        if not fs.exists(path):
            return cls(fs, path, _Document(FORMAT_VERSION, 0, {}))
        try:
            data = fs.read_file(path)
        except OSError as e:
            raise StorageFailure(f"reading metadata {path}", e) from e
        problem = check_document(data)
        if problem is not None:
            previous = path + PREVIOUS_SUFFIX
            good_copy = fs.exists(previous) and check_document(fs.read_file(previous)) is None
            raise CorruptMetadata(path, problem, previous if good_copy else None)
        return cls(fs, path, msgspec.json.decode(data, type=_Document))

    @property
    def version(self) -> int:
        """Bumped by every committed transaction."""
        return self._document.version

    def get(self, namespace: str, name: str) -> Any:
        return copy.deepcopy(self._document.namespaces.get(namespace, {}).get(name))

    def names(self, namespace: str) -> list[str]:
        return sorted(self._document.namespaces.get(namespace, {}))

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Changes made in the block are committed together, durably, when it exits cleanly.

        An exception in the block, or a failed write, leaves the store as it was.
        """
        txn = Transaction(copy.deepcopy(self._document.namespaces))
        yield txn
        document = _Document(FORMAT_VERSION, self._document.version + 1, txn.namespaces)
        try:
            if self._document.version:  # something was committed before: keep it
                self._fs.replace_atomically(
                    self._path + PREVIOUS_SUFFIX, msgspec.json.encode(self._document)
                )
            self._fs.replace_atomically(self._path, msgspec.json.encode(document))
        except OSError as e:
            raise StorageFailure(f"writing metadata {self._path}", e) from e
        self._document = document


def check_document(data: bytes) -> str | None:
    """What is wrong with ``data`` as a metadata document, in words; None if nothing."""
    try:
        document = msgspec.json.decode(data, type=_Document)
    except msgspec.DecodeError as e:
        return f"not a metadata document: {e}"
    if document.format != FORMAT_VERSION:
        return f"unknown format {document.format}"
    return None
