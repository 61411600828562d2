"""The ``gan.evaluator`` command: its old flag spelling, also through the ``gan-evaluator`` console script."""

import sys


def test_the_old_flag_spelling_becomes_the_overrides_every_command_takes():
    from gan.evaluator import legacy_flags

    assert legacy_flags(["--data-root", "../m", "--download"]) == ["data.root=../m", "data.download=true"]
    assert legacy_flags(["--data-root=x", "data.download=false"]) == ["data.root=x", "data.download=false"]


def test_the_console_script_rewrites_the_old_flags_before_hydra_reads_them(monkeypatch):
    import gan.evaluator as command

    seen: list[list[str]] = []
    monkeypatch.setattr(command, "main", lambda: seen.append(sys.argv[1:]))
    monkeypatch.setattr(sys, "argv", ["gan-evaluator", "--data-root", "../m", "validate.enabled=true"])
    assert command.cli() is None  # nothing for sys.exit: status 0
    assert seen == [["data.root=../m", "validate.enabled=true"]]


def test_more_validation_images_than_the_study_has_are_refused_before_any_work(tmp_path, tiny_mnist):
    """Issue 23's probe: validate.num_images=1e12 ran for minutes on the 10,000 images there are and recorded
    1e12. Refused before the evaluator is read (data.root is absent here), naming the bound; a smaller data set
    than MNIST is refused by the study itself, before any image is scored."""
    import pytest

    from gan.errors import ConfigError
    from gan.eval.corruptions import validation_study
    from tests.helpers import _cli

    proc = _cli(
        "gan.evaluator", "validate.enabled=true", "validate.num_images=10001", f"data.root={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: validate.num_images must be an integer from 100 to 10000")
    )
    with pytest.raises(ConfigError, match="validate.num_images=200: .* has 128 training images held out"):
        validation_study(None, str(tiny_mnist), 200)  # no evaluator needed: refused before scoring
