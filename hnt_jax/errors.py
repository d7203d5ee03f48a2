"""Errors raised for bad input: each names the file, the line (when there is one) and what is wrong."""
from __future__ import annotations

import os
from typing import Optional


class InputError(ValueError):
  """Something a run reads is wrong. `str(err)` reads `path:line: message`."""

  def __init__(self, message: str, path: Optional[os.PathLike | str] = None,
               line: Optional[int] = None):
    self.message = message
    self.path = None if path is None else str(path)
    self.line = line
    where = ""
    if self.path is not None:
      where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
    super().__init__(where + message)


class DataError(InputError):
  """A dataset file or setting is wrong."""


class DatasetNotFoundError(DataError):
  """The dataset directory or one of its files is missing."""


class WorkdirError(InputError):
  """A workdir's files are damaged or missing, it cannot be written, or another run is using it."""


class ConfigError(ValueError):
  """A configuration value is invalid or a key does not exist."""
