"""The ``gan.evaluator`` command: its old flag spelling."""


def test_the_old_flag_spelling_becomes_the_overrides_every_command_takes():
    from gan.evaluator import legacy_flags

    assert legacy_flags(["--data-root", "../m", "--download"]) == ["data.root=../m", "data.download=true"]
    assert legacy_flags(["--data-root=x", "data.download=false"]) == ["data.root=x", "data.download=false"]
