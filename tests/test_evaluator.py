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
