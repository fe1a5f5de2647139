"""The library's exception types: each message says what is wrong and what to do next."""


class ChargenError(Exception):
    """A problem a person can fix; the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class CorpusError(ChargenError):
    """The text to train or evaluate on cannot be used (missing, empty, binary, bad UTF-8)."""


class CheckpointError(ChargenError):
    """A checkpoint is missing, damaged, of an unknown format, or not chargen's."""


class SettingError(ChargenError):
    """A setting is out of range; the message names the flag."""

    exit_code = 2
