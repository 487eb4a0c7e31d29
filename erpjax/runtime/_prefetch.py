"""A background thread that runs an iterator ahead of its consumer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(source: Iterable[T], depth: int) -> Iterator[T]:
  """Iterates `source` on a background thread, up to `depth` elements ahead.

  The Rust tokenizer and XLA release the GIL, so tokenizing, packing and placing the next batches
  overlaps the device step (the main thread mostly waits on the device). An exception in `source`
  is re-raised here; leaving the loop early stops the thread.
  """
  if depth < 1:
    raise ValueError(f"prefetch depth must be >= 1, got {depth}")
  slots: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()

  def put(element) -> bool:
    while not stop.is_set():
      try:
        slots.put(element, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce() -> None:
    try:
      for element in source:
        if not put(element):
          return
      put(_DONE)
    except BaseException as error:  # noqa: BLE001  # Re-raised on the consumer's thread.
      put(error)

  thread = threading.Thread(target=produce, name="erpjax-prefetch", daemon=True)
  thread.start()
  try:
    while True:
      element = slots.get()
      if element is _DONE:
        return
      if isinstance(element, BaseException):
        raise element
      yield element
  finally:
    stop.set()
    thread.join()
