"""Errors a user can cause. Each message is one line naming the file or field and the rule broken;
the CLI prints it as it is, without a traceback, and exits non-zero."""


class CellcastError(Exception):
    """Base of every error caused by input, configuration or state rather than by a bug."""

    exit_code = 2

    def __init__(self, message: str):
        # one line, whatever the message quotes from an input (a column name holding a line break, say)
        message = " ".join(str(message).splitlines())
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CellcastError):
    """params.yaml or a command-line option is invalid."""


class IngestError(CellcastError):
    """An input file cannot be read as a time series; `rule` (and `count`) go to the quarantine report."""

    def __init__(self, message: str, rule: str | None = None, count: int | None = None):
        super().__init__(message)
        self.rule = rule
        self.count = count

    @classmethod
    def broken(cls, rule: str, message: str, count: int | None = None) -> "IngestError":
        return cls(message, rule, count)


class DataValidationError(CellcastError):
    """A dataset broke a validation rule; the report and the rejected data are kept."""

    def __init__(self, message: str, report_path: str | None = None, quarantine_path: str | None = None):
        super().__init__(message)
        self.report_path = report_path
        self.quarantine_path = quarantine_path


class NotFoundError(CellcastError):
    """A dataset, model version or alias the user named does not exist."""


class TrainingError(CellcastError):
    """Training could not produce a usable model (diverged, no windows)."""


class ExportError(CellcastError):
    """An exported model failed its parity gate or could not be exported."""


class NoChampionError(NotFoundError):
    """The registry has no champion for a model."""


class TrackingUnavailableError(CellcastError):
    """The tracking server (MLflow) could not be reached within the configured retries
    (params.yaml registry.retry_seconds); the message names the server and what was kept."""

    def kept(self, what: str) -> "TrackingUnavailableError":
        """The same error, saying what survived the failure and how to go on."""
        return TrackingUnavailableError(f"{self.message}; {what}")


class RegistryBusyError(CellcastError):
    """The aliases of a model stayed locked by another process longer than the wait allows."""


class DataVersionError(CellcastError):
    """A data version could not be kept (pushed) or its bytes did not match their md5."""
