from __future__ import annotations

import pytest

from monai_stroke import __version__
from monai_stroke.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--no-such-option"], ["no-such-command"]])
def test_usage_errors_are_one_error_line_with_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "Traceback" not in err[0]
