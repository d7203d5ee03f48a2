"""Folders a command creates and, when it fails before writing anything into them, removes again."""
from __future__ import annotations

import os
from typing import Optional


def first_missing(folder: str) -> Optional[str]:
  """The outermost of `folder` and its parents that does not exist yet (None when `folder` exists)."""
  folder = os.path.abspath(folder)
  if os.path.isdir(folder):
    return None
  top = folder
  while not os.path.exists(os.path.dirname(top)):
    top = os.path.dirname(top)
  return top


def remove_empty(folder: str, top: str) -> None:
  """Removes `folder` and its parents up to and including `top` while they are empty."""
  folder, top = os.path.abspath(folder), os.path.abspath(top)
  while os.path.isdir(folder) and not os.listdir(folder):
    os.rmdir(folder)
    if folder == top or not folder.startswith(top):
      break
    folder = os.path.dirname(folder)
