"""Where each public dataset comes from, and a verified downloader for those whose upstream ships files.

  python -m hnt_jax.data.download taobao --dest ~/data/hnt
  python -m hnt_jax.data.download --list

Files are written to DEST/<folder>/ (the folder a config's `data.subdir` names) and kept only when their
sha256 matches the published sum.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
import urllib.request
from typing import Optional

from hnt_jax import folders


@dataclasses.dataclass(frozen=True)
class Source:
  """A public dataset: its folder name, provenance and (when fetchable) file URLs with sha256 sums."""
  name: str
  subdir: str
  provenance: str
  base_url: str = ""  # files are fetched from base_url + file name
  sha256: Optional[dict[str, str]] = None  # file name -> sum; None: no verified files to fetch
  manual: str = ""  # how to obtain it when it cannot be fetched

  @property
  def fetchable(self) -> bool:
    return bool(self.base_url and self.sha256)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source(
        name="taobao", subdir="taobao_mbcgcn",
        provenance=("Taobao of MB-CGCN / MuLe (15,449 users, 11,953 items; view, cart, buy), as published "
                    "in geonwooko/MULE data/taobao (commit 52bccb53), identical to LokHsu/HSCD "
                    "data/taobao.zip; ids shifted +1 from SS-00-SS/MBCGCN."),
        base_url=("https://raw.githubusercontent.com/geonwooko/MULE/"
                  "52bccb5346a17894170c76ba1619b7c86bb166ee/data/taobao/"),
        sha256={
            "buy.txt": "60f963e52d72055c86efebeb960b3be9ff5d0cd3278d76678076a400d0820c7b",
            "cart.txt": "286b6d61c6b75806044fb421e48e7300c865836abd010c6315001f92f6304bc7",
            "test.txt": "5f5b3dd97ea2f8891eec83eb204cf951271ee57ef4ca91bdd8e2a7fc1a16732d",
            "valid.txt": "f9cef402d7213de55f1f9be8d79862880582300e4610d83284f3c315cffdef5c",
            "view.txt": "4374ccacb4a3e6f33afa2d4bab5b40384875ca7907f24447f1942b322c4eebc0",
        }),
    Source(
        name="tmall_noclick", subdir="tmall_crgcn_partial_noclick",
        provenance=("CRGCN Tmall (41,738 users, 11,953 items) without its click behavior, as published in "
                    "Breeze-del/PureMB data/Tmall (commit 41466833). Use configs/tmall.py:noclick."),
        base_url=("https://raw.githubusercontent.com/Breeze-del/PureMB/"
                  "41466833f095526460372e9bbafe2efae1d1ffe8/data/Tmall/"),
        sha256={
            "buy.txt": "e71847598728db6854efc92757f2e42163fde244ab89d146e648066834f79f7d",
            "cart.txt": "ad96a69d97982adaa066285b15d7fb024386bea92fda1aaf3f4c1c467a0192ae",
            "collect.txt": "50b4ea1e7d5f329651c3c9279b3da95f368a99938bfa576ae796bf30558b9c23",
            "count.txt": "f90f6269767e5c1e60fbc50d849ff4a89871a0ff445f81825a4cdd39b4ce6c2e",
            "test.txt": "69aad1fca67254071f1934d2905646d7d219e8a2071d8669351008da84c9a19e",
            "validation.txt": "0f567dda6d435f249d15e57786eaa8e165e63dc7d5b3ee89d1daf0af3855d036",
        }),
    Source(
        name="tmall", subdir="tmall",
        provenance="CRGCN Tmall with click -> collect -> cart -> buy (41,738 users, 11,953 items).",
        manual=("Copy buy.txt, cart.txt, collect.txt, click.txt, validation.txt, test.txt and count.txt "
                "from the CRGCN repository (data/Tmall) into DEST/tmall. Without click.txt use "
                "`hnt_jax.data.download tmall_noclick` and configs/tmall.py:noclick.")),
    Source(
        name="retailrocket", subdir="retailrocket_cml",
        provenance=("RetailRocket split of CML (WSDM'22; 2,174 users, 30,113 items), as published in "
                    "HKUDS/SSLRec datasets/multi_behavior/retail_rocket (commit a57f21b4)."),
        base_url=("https://raw.githubusercontent.com/HKUDS/SSLRec/"
                  "a57f21b4fa1b5cdc71877ffd0623daa2d4e07cc3/datasets/multi_behavior/retail_rocket/"),
        sha256={
            "trn_view": "ab31f37e3134df85a4728a2580b78603aa6428b9464cf61821e1853ef77d5c4f",
            "trn_cart": "81cee009d43abcaa99f50dcafaa510189418460c9e47ed2c310d5572e98924ac",
            "trn_buy": "8a1a3cd8e25e10509fbe444edf61a88d00399f443826bce95061c3409e1252e9",
            "tst_int": "6d1d5cadb287465f4dbae9b236a67454d481bbfd5a8beaafc4523a4b8ee5179c",
        }),
    Source(
        name="yelp", subdir="yelp",
        provenance="Multi-behavior Yelp (tip, dislike, neutral, like) as shipped by KHGT / MATN.",
        manual=("Copy trn_tip, trn_neg, trn_neutral, trn_pos and tst_int from the KHGT repository "
                "(akaxlh/KHGT, Datasets/Yelp) into DEST/yelp.")),
    Source(
        name="beibei", subdir="beibei",
        provenance="Beibei (pv, cart, buy) as shipped by GHCF / MBSSL in adjacency-list format.",
        manual=("Copy pv.txt, cart.txt, train.txt and test.txt from the GHCF repository "
                "(chenchongthu/GHCF, data/Beibei) into DEST/beibei.")),
    Source(
        name="jdata", subdir="jdata",
        provenance="JData (view, collect, cart, buy) as shipped by CRGCN.",
        manual=("Copy view.txt, collect.txt, cart.txt, buy.txt, validation.txt, test.txt and count.txt "
                "from the CRGCN repository (data/jdata) into DEST/jdata.")),
]}


def source_for_subdir(subdir: str) -> Optional[Source]:
  for s in SOURCES.values():
    if s.subdir == subdir:
      return s
  return None


def how_to_get(subdir: str, data_dir: str) -> str:
  """Where a dataset folder comes from and where to put it, for error messages."""
  s = source_for_subdir(subdir)
  dest = data_dir or "<data dir>"
  if s is None:
    return f"Put the dataset's files in {os.path.join(dest, subdir)}."
  text = f"{s.provenance}\n"
  if s.fetchable:
    text += (f"Fetch it (sha256-verified) with:\n  python -m hnt_jax.data.download {s.name} --dest {dest}\n"
             f"then point data.dir (or HNT_DATA_DIR) at {dest}.")
  else:
    text += s.manual.replace("DEST", dest)
  return text


def sha256_of(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


class DownloadError(RuntimeError):
  pass


def download(name: str, dest: str, mirror: str = "", timeout: float = 60.0) -> list[str]:
  """Fetches every file of dataset `name` into dest/<subdir>, verifying sha256; returns the paths.

  `mirror`, when set, replaces the upstream address: files are fetched from `mirror/<subdir>/<file>`.
  Files already present with the right sum are kept; a file with a wrong sum is never written.
  """
  if name not in SOURCES:
    raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
  s = SOURCES[name]
  if not s.fetchable:
    raise DownloadError(f"{name}: no verified public files to fetch. {s.manual.replace('DEST', dest)}")
  folder = os.path.abspath(os.path.join(dest, s.subdir))
  created = folders.first_missing(folder)  # the outermost folder this download creates, if any
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise DownloadError(f"cannot create {folder} ({e.strerror}); choose a writable --dest") from None
  base = f"{mirror.rstrip('/')}/{s.subdir}/" if mirror else s.base_url
  try:
    return [_fetch(base + file, os.path.join(folder, file), expected, timeout)
            for file, expected in sorted(s.sha256.items())]
  except DownloadError:
    if created:  # folders made for this download and left empty by its failure are removed
      folders.remove_empty(folder, top=created)
    raise


def _fetch(url: str, path: str, expected: str, timeout: float) -> str:
  """Downloads `url` to `path` unless a file with the `expected` sha256 is there; a wrong sum is never kept."""
  if os.path.exists(path) and sha256_of(path) == expected:
    return path
  folder, file = os.path.split(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file}.")
  except OSError as e:
    raise DownloadError(f"cannot write into {folder} ({e.strerror}); choose a writable --dest") from None
  h = hashlib.sha256()
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
      for block in iter(lambda: resp.read(1 << 20), b""):
        h.update(block)
        out.write(block)
    if h.hexdigest() != expected:
      raise DownloadError(f"{url}: sha256 {h.hexdigest()} does not match the published {expected}; "
                          "the file was not kept")
    os.replace(tmp, path)
  except OSError as e:
    raise DownloadError(f"{url}: download failed ({e})") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m hnt_jax.data.download", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", nargs="?", help="dataset name (see --list)")
  parser.add_argument("--dest", default=os.environ.get("HNT_DATA_DIR", ""),
                      help="data directory (default: $HNT_DATA_DIR)")
  parser.add_argument("--mirror", default="", help="fetch from MIRROR/<folder>/<file> instead")
  parser.add_argument("--list", action="store_true", help="list the known datasets and exit")
  args = parser.parse_args(argv)
  if args.list or not args.name:
    for s in SOURCES.values():
      how = "fetchable" if s.fetchable else "manual"
      print(f"{s.name:14s} {s.subdir:30s} {how:9s} {s.provenance}")
    return 0
  if not args.dest:
    parser.error("--dest is required (or set HNT_DATA_DIR)")
  try:
    paths = download(args.name, args.dest, mirror=args.mirror)
  except DownloadError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for p in paths:
    print(f"ok  {p}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
