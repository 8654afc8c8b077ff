"""The bounded speaker cache: processed reference voices, keyed by file content hash."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    size: int
    capacity: int
    hits: int
    misses: int
    evictions: int


class SpeakerCache(Generic[V]):
    """An LRU of `capacity` entries. Keys are content hashes, so an edited file is never stale."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    @staticmethod
    def key_for(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def get_or_create(self, data: bytes, create: Callable[[bytes], V]) -> V:
        """The cached value for `data`'s content, computed by `create(data)` on a miss."""
        key = self.key_for(data)
        with self._lock:
            if key in self._entries:
                self._hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self._misses += 1
        value = create(data)  # outside the lock: processing may be slow
        with self._lock:
            if self.capacity > 0:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
                    self._evictions += 1
        return value

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self.capacity, self._hits, self._misses, self._evictions)
