"""`jaxmedgan reader-study create|serve|report`: a real-vs-synthetic reader study.

  jaxmedgan reader-study create --real DIR --synthetic DIR_OR_WORKDIR --num 100 --out STUDY [--seed 0]
  jaxmedgan reader-study serve STUDY --port 8000 [--host 127.0.0.1]
  jaxmedgan reader-study report STUDY [--out DIR]

`main(argv)` takes the arguments after `reader-study` (argv[0] is the subcommand) and returns the
exit code: 0 ok, 2 usage error (argparse's convention), 1 a failure (bad folder, file, study).
"""
from __future__ import annotations

import argparse
import sys

from jaxmedgan import subcommands
from jaxmedgan.reader_study import app, report, study

USAGE = """usage: jaxmedgan reader-study <command> [options]

commands:
  create  build a study:  --real DIR --synthetic DIR|WORKDIR --num N --out STUDY [--seed S] [--size PX]
  serve   run the web page:  STUDY [--port 8000] [--host 127.0.0.1] [--allowed-host NAME]
  report  accuracy, sensitivity, specificity, kappas:  STUDY [--out DIR]  (default STUDY/report)

`<command> --help` for details.
"""

_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, ValueError, OSError)


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return p.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage / the error
        return int(e.code or 0)


def _int_at_least(lo: int):
    """argparse type: an integer >= lo."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text}")
        return value
    return parse


def _fail(cmd: str, e: BaseException) -> int:
    print(f"jaxmedgan reader-study {cmd}: error: {e}", file=sys.stderr)
    return 1


def create_command(argv: list[str]) -> int:
    """`jaxmedgan reader-study create ...`: builds the study folder."""
    p = argparse.ArgumentParser(prog="jaxmedgan reader-study create",
                                description="Balanced, shuffled, seeded study of real and synthetic images.")
    p.add_argument("--real", required=True, help="folder of real images (png/jpg/tif/bmp, recursive)")
    p.add_argument("--synthetic", required=True,
                   help="folder of synthetic images, a folder with samples.npz, or a training workdir")
    p.add_argument("--num", type=_int_at_least(2), required=True, help="number of images (even: half real)")
    p.add_argument("--out", required=True, help="study folder to create (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing and shuffling images")
    p.add_argument("--size", type=_int_at_least(8), default=None,
                   help="resize every image to PX x PX (use when real and synthetic sizes differ)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        s = study.create_study(args.real, args.synthetic, args.num, args.out, seed=args.seed, size=args.size)
    except _ERRORS as e:
        return _fail("create", e)
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"Study with {s.num_real} real + {s.num_synthetic} synthetic images in {s.path}")
    print(f"Next: jaxmedgan reader-study serve {s.path} --port 8000")
    return 0


def serve_command(argv: list[str]) -> int:
    """`jaxmedgan reader-study serve STUDY ...`: runs the web app until Ctrl-C."""
    p = argparse.ArgumentParser(prog="jaxmedgan reader-study serve", description="Serve the reader-study page.")
    p.add_argument("study", help="study folder made by `reader-study create`")
    p.add_argument("--port", type=_int_at_least(0), default=8000, help="TCP port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--allowed-host", action="append", default=[],
                   help="another Host header to answer, e.g. an HTTPS proxy's name 'study.example.org' (repeatable; "
                        "requests naming any other host are refused: DNS-rebinding protection)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    if args.port > 65535:
        print(f"jaxmedgan reader-study serve: error: --port must be <= 65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        app.serve(args.study, host=args.host, port=args.port, allowed_hosts=tuple(args.allowed_host))
    except _ERRORS as e:
        return _fail("serve", e)
    return 0


def report_command(argv: list[str]) -> int:
    """`jaxmedgan reader-study report STUDY ...`: writes report.md, report.json, answers.csv."""
    p = argparse.ArgumentParser(prog="jaxmedgan reader-study report",
                                description="Accuracy, sensitivity, specificity, binomial tests, kappas.")
    p.add_argument("study", help="study folder")
    p.add_argument("--out", default=None, help="output folder (default STUDY/report)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        out = report.write_report(args.study, args.out)
    except _ERRORS as e:
        return _fail("report", e)
    print(f"Wrote report.md, report.json and answers.csv to {out}")
    return 0


COMMANDS = {"create": create_command, "serve": serve_command, "report": report_command}


def main(argv: list[str]) -> int:
    """Dispatches `argv[0]` (create | serve | report) with `argv[1:]`; returns the exit code."""
    return subcommands.dispatch("jaxmedgan reader-study", COMMANDS, USAGE, argv)
