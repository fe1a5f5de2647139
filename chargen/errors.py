"""The library's exception types: each message says what is wrong and what to do next."""


class ChargenError(Exception):
    """A problem a person can fix; the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class CorpusError(ChargenError):
    """The text to train or evaluate on cannot be used (missing, empty, binary, bad UTF-8)."""


class CheckpointError(ChargenError):
    """A checkpoint is missing, damaged, of an unknown format, or not chargen's."""


class TrainingError(ChargenError):
    """Training cannot go on (the loss stopped being finite); the message says what was kept."""


class SettingError(ChargenError, ValueError):
    """A setting is out of range or unknown. The message starts with the setting's name (`temp must be ...`),
    which the CLI replaces with the flag a person typed (`--temp must be ...`)."""

    exit_code = 2

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
