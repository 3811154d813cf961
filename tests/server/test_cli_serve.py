"""`corral serve` and `corral create` on the command line (the server itself is exercised
through a `corral serve` subprocess in test_clients.py)."""

from __future__ import annotations

import subprocess
import sys

from corral.cli.main import build_parser, main


def test_help_stays_light() -> None:
    code = (
        "import sys, corral.cli.main as m; m.build_parser(); "
        "heavy = [x for x in ('fastapi', 'torch', 'uvicorn') if x in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_options() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.models_max, args.max_queue) == (
        "127.0.0.1", 11435, None, 3, 64,
    )  # fmt: skip
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", "9", "--api-key", "k", "--models-max", "2",
         "--max-queue", "5", "--keep-alive", "-1"]
    )  # fmt: skip
    assert (args.host, args.port, args.api_key, args.models_max, args.max_queue) == (
        "0.0.0.0", 9, "k", 2, 5,
    )  # fmt: skip
    assert main(["serve", "--models-max", "0"]) == 2


def test_serve_rejects_a_bad_keep_alive(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "--keep-alive", "soon"]) == 1
    assert "keep_alive" in capsys.readouterr().err
