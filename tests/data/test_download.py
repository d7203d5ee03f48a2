"""The downloader fetches from a local HTTP server and keeps only files whose sha256 matches."""
import functools
import hashlib
import http.server
import threading

import pytest

from hnt_jax.data import download


@pytest.fixture
def server(tmp_path):
  root = tmp_path / "mirror"
  (root / "toy").mkdir(parents=True)
  (root / "toy" / "a.txt").write_text("1 1\n")
  (root / "toy" / "b.txt").write_text("2 2\n")
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  handler.log_message = lambda *a: None
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()


def sha(text):
  return hashlib.sha256(text.encode()).hexdigest()


def test_download_verifies_sums(server, tmp_path, monkeypatch):
  monkeypatch.setitem(download.SOURCES, "toy", download.Source(
      name="toy", subdir="toy", provenance="test", base_url="http://unused/",
      sha256={"a.txt": sha("1 1\n"), "b.txt": sha("2 2\n")}))
  dest = tmp_path / "data"
  paths = download.download("toy", str(dest), mirror=server)
  assert sorted(p.split("/")[-1] for p in paths) == ["a.txt", "b.txt"]
  assert (dest / "toy" / "a.txt").read_text() == "1 1\n"
  assert download.main(["toy", "--dest", str(dest), "--mirror", server]) == 0  # present files are kept


def test_wrong_sum_is_rejected_and_not_kept(server, tmp_path, monkeypatch):
  monkeypatch.setitem(download.SOURCES, "toy", download.Source(
      name="toy", subdir="toy", provenance="test", base_url="http://unused/",
      sha256={"a.txt": sha("something else")}))
  dest = tmp_path / "data"
  with pytest.raises(download.DownloadError, match="does not match"):
    download.download("toy", str(dest), mirror=server)
  assert not dest.exists()  # no file kept, and no empty folder left behind
  (dest / "toy").mkdir(parents=True)
  with pytest.raises(download.DownloadError, match="does not match"):
    download.download("toy", str(dest), mirror=server)
  assert list((dest / "toy").iterdir()) == []  # a folder that was there before stays


def test_missing_file_on_server_is_a_clear_error(server, tmp_path, monkeypatch):
  monkeypatch.setitem(download.SOURCES, "toy", download.Source(
      name="toy", subdir="toy", provenance="test", base_url="http://unused/", sha256={"zzz.txt": sha("")}))
  with pytest.raises(download.DownloadError, match="download failed"):
    download.download("toy", str(tmp_path / "d"), mirror=server)


def test_no_network_unknown_name_and_unwritable_dest_are_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(download.SOURCES, "toy", download.Source(
      name="toy", subdir="toy", provenance="test", base_url="http://127.0.0.1:9/", sha256={"a.txt": sha("")}))
  assert download.main(["toy", "--dest", str(tmp_path / "d")]) == 1  # nothing listens on port 9
  assert "download failed" in capsys.readouterr().err and not (tmp_path / "d").exists()
  assert download.main(["nope", "--dest", str(tmp_path)]) == 1
  assert "unknown dataset 'nope'; known:" in capsys.readouterr().err
  (tmp_path / "file").write_text("")
  assert download.main(["toy", "--dest", str(tmp_path / "file")]) == 1
  assert "cannot create" in capsys.readouterr().err


def test_manual_datasets_explain_how_to_get_them(tmp_path):
  with pytest.raises(download.DownloadError, match="KHGT"):
    download.download("yelp", str(tmp_path))
  assert download.main(["--list"]) == 0


def test_every_fetchable_source_matches_a_config_folder():
  from tests.conftest import load_config
  subdirs = {load_config(n).data.subdir for n in ("taobao.py", "retailrocket.py")}
  subdirs.add(load_config("tmall.py", "noclick").data.subdir)
  fetchable = {s.subdir for s in download.SOURCES.values() if s.fetchable}
  assert fetchable == subdirs
