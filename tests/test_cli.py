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


def test_user_error_raised_inside_a_monai_chain_is_still_a_user_error() -> None:
    from monai.transforms import Compose, Lambda

    from monai_stroke.errors import UserInputError, find_user_error

    def bad(_):
        raise UserInputError("bad.nii.gz: not 3D; give a 3D CT volume")

    with pytest.raises(RuntimeError) as info:
        Compose([Lambda(bad)])(1)
    found = find_user_error(info.value)
    assert isinstance(found, UserInputError) and "bad.nii.gz" in str(found)
    assert find_user_error(RuntimeError("plain bug")) is None
