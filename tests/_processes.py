"""Helpers of the multi-process tests: a free localhost port, and collecting workers' results."""

import json
import socket
import subprocess


def free_port() -> int:
  """A TCP port on localhost that is free now (for a coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def finish(processes: list[subprocess.Popen], timeout: float) -> list[dict]:
  """Waits for each worker; asserts it succeeded and returns the JSON of its last stdout line.
  Workers still running when one fails are killed."""
  results = []
  try:
    for process in processes:
      out, err = process.communicate(timeout=timeout)
      assert process.returncode == 0, err[-3000:]
      results.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  return results
