"""reader_study.cli: create / serve / report from the command line; exit codes and messages."""
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from jaxmedgan.reader_study import cli
from tests.reader_study import make_study, write_pngs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_create_prints_the_study_and_errors_exit_1(tmp_path, capsys):
    write_pngs(tmp_path / "real", 2, size=16)
    write_pngs(tmp_path / "synthetic", 3, size=8)
    args = ["create", "--real", str(tmp_path / "real"), "--synthetic", str(tmp_path / "synthetic"), "--num", "4"]
    assert cli.main(args + ["--out", str(tmp_path / "s"), "--seed", "7"]) == 0
    captured = capsys.readouterr()
    assert "2 real + 2 synthetic images in" in captured.out and "reader-study serve" in captured.out
    assert "warning: image sizes differ" in captured.err
    assert cli.main(args + ["--out", str(tmp_path / "s")]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert cli.main(args[:-1] + ["6", "--out", str(tmp_path / "t")]) == 1
    assert re.search(r"error: --real '.*real' has 2 images; --num 6 needs 3 real", capsys.readouterr().err)
    assert cli.main(args[:-1] + ["1", "--out", str(tmp_path / "t")]) == 2  # argparse: must be >= 2
    assert "must be an integer >= 2, got 1" in capsys.readouterr().err
    assert cli.main([]) == 2 and cli.main(["--help"]) == 0
    assert cli.main(["creat"]) == 2 and "unknown command 'creat'" in capsys.readouterr().err


def _serve(tmp_path) -> tuple[subprocess.Popen, list[str]]:
    """`reader-study serve` of a 4-image study in a subprocess on a free port, and its 3 banner lines."""
    study_dir = make_study(tmp_path, num=4)
    code = "import sys; from jaxmedgan.reader_study import cli; sys.exit(cli.main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", study_dir, "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, [proc.stdout.readline() for _ in range(3)]


def test_serve_prints_working_urls(tmp_path):
    proc, lines = _serve(tmp_path)
    try:
        admin = re.search(r"Admin page \(keep private\):\s+(http://127\.0\.0\.1:\d+/admin/\S+)", lines[2])
        assert admin, (lines, proc.stderr.read() if proc.poll() is not None else "")
        assert "4 images, 0 readers" in lines[0]
        with urllib.request.urlopen(admin.group(1), timeout=10) as resp:
            assert resp.status == 200 and b"Reader study: admin" in resp.read()
        home = re.search(r"(http://127\.0\.0\.1:\d+/)", lines[1]).group(1)
        with urllib.request.urlopen(home, timeout=10) as resp:
            assert b"Your name" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_errors_name_the_study_or_port(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "nope")]) == 1
    assert "nope/study.sqlite' not found" in capsys.readouterr().err
    study_dir = make_study(tmp_path, num=4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", study_dir, "--port", str(port)]) == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert cli.main(["serve", study_dir, "--port", "70000"]) == 2


def test_serve_checks_the_host_header_and_keeps_tokens_out_of_the_log(tmp_path):
    proc, lines = _serve(tmp_path)
    try:
        admin = re.search(r"(http://127\.0\.0\.1:(\d+))/admin/(\S+)", lines[2])
        assert admin, lines
        base, port, admin_token = admin.group(1), admin.group(2), admin.group(3)
        req = urllib.request.Request(base + "/start", data=b"name=Ann", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # follows the 303 to /r/TOKEN
            reader_token = re.search(r"/r/([^/]+)$", resp.url).group(1)
        with urllib.request.urlopen(f"{base}/admin/{admin_token}", timeout=10) as resp:
            assert resp.status == 200
        rebound = urllib.request.Request(base + "/", headers={"Host": f"evil.example:{port}"})
        try:
            urllib.request.urlopen(rebound, timeout=10)
            raise AssertionError("a request for another host name was served")
        except urllib.error.HTTPError as e:
            assert e.code == 400
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[1]
    assert "GET /r/<token> HTTP" in log and "GET /admin/<token> HTTP" in log, log
    assert reader_token not in log and admin_token not in log
