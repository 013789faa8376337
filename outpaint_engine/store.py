"""Where the embedded queue keeps a job's images: PNG files under the data directory.

Canvases cross the queue as PNG bytes (the worker encodes each checkpoint once with
:func:`outpaint_engine.imageio.encode_png`); the Redis backend keeps them in Redis instead.
Standard library only: the bot imports this.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from outpaint_engine.queue.base import QueueError

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_job_id(job_id: str) -> bool:
    """Whether ``job_id`` is a well-formed job id (1 to 64 letters, digits, ``-``, ``_``)."""
    return _JOB_ID.fullmatch(job_id) is not None


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a well-formed job id, else QueueError."""
    if not is_job_id(job_id):
        raise QueueError(f"{job_id!r} is not a job id.")
    return job_id


class FileImageStore:
    """A job's images as files: ``root/<job id>/source.png``, ``root/<job id>/step-0003.png`` and,
    for a step generated as several candidates, ``root/<job id>/step-0003.candidate-1.png``...

    Writes are atomic (a temporary file renamed into place), so a crash never leaves half a PNG
    where a checkpoint should be. Blocking: call it from a worker thread or ``asyncio.to_thread``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)

    def _source_path(self, job_id: str) -> Path:
        return self._dir(job_id) / "source.png"

    def _step_path(self, job_id: str, step: int) -> Path:
        return self._dir(job_id) / f"step-{step:04d}.png"

    def _candidate_path(self, job_id: str, step: int, candidate: int) -> Path:
        return self._dir(job_id) / f"step-{step:04d}.candidate-{candidate}.png"

    def put_source(self, job_id: str, png: bytes) -> None:
        self._write(self._source_path(job_id), png)

    def put_step(self, job_id: str, step: int, png: bytes) -> None:
        self._write(self._step_path(job_id, step), png)

    def put_candidate(self, job_id: str, step: int, candidate: int, png: bytes) -> None:
        """Candidate ``candidate`` (1 or more) of ``step``; candidate 0 is the step itself."""
        self._write(self._candidate_path(job_id, step, candidate), png)

    def get_source(self, job_id: str) -> bytes | None:
        return self._read(self._source_path(job_id))

    def get_step(self, job_id: str, step: int) -> bytes | None:
        if step < 0:
            return None
        return self._read(self._step_path(job_id, step))

    def get_candidate(self, job_id: str, step: int, candidate: int) -> bytes | None:
        if candidate == 0:
            return self.get_step(job_id, step)
        if step < 0 or candidate < 0:
            return None
        return self._read(self._candidate_path(job_id, step, candidate))

    def has_candidate(self, job_id: str, step: int, candidate: int) -> bool:
        return self._candidate_path(job_id, step, candidate).exists()

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
