"""Exceptions raised by stem_explorer.

Every error a user can cause by bad input derives from :class:`StemExplorerError`, and
its message names the problem *and* the fix. The classes also derive from the builtin
exception a Python user would expect (``ValueError``, ``FileNotFoundError``...), so
ordinary ``except`` clauses keep working.
"""


class StemExplorerError(Exception):
    """Base class of all errors raised by stem_explorer."""

    def __reduce__(self):
        # Rebuild from the message alone. The default for classes that mix in OSError
        # goes through a __new__ pickle cannot call, and errors raised on a dask worker
        # must arrive at the client as themselves, not as a generic Exception.
        return (type(self), self.args, self.__dict__ or None)


class DataSetError(StemExplorerError, ValueError):
    """A data set cannot be opened or read as described (wrong shape, dtype, layout)."""


class DataSetNotFoundError(DataSetError, FileNotFoundError):
    """The file or data set path does not exist."""


class DataSetPermissionError(DataSetError, PermissionError):
    """The file or folder exists but this user may not read (or enter) it."""


class FormatError(DataSetError):
    """The file is not of the expected format, or is malformed / truncated."""


class ChecksumError(DataSetError):
    """Stored bytes do not match the checksum recorded for them."""


class CalibrationError(DataSetError):
    """A calibration (scan step, detector pixel size, camera length, beam energy) has
    an unknown or unsuitable unit, or a value that is not a plausible positive size."""


class CodecError(DataSetError):
    """The codec a data set is compressed with is not available on this machine."""


class MaskError(StemExplorerError, ValueError):
    """A mask description is invalid or does not fit the detector."""


class AnalysisError(StemExplorerError, ValueError):
    """Analysis parameters are invalid for the data set."""


class OptionError(StemExplorerError, ValueError):
    """An option (a count, a size in bytes, a time) is outside its allowed range."""


class ClusterError(StemExplorerError, RuntimeError):
    """The dask cluster cannot be reached or went away."""


class JobCancelledError(StemExplorerError, RuntimeError):
    """The job was cancelled (by the user or because a newer job superseded it)."""


class WidgetError(StemExplorerError, ValueError):
    """A widget was given input it cannot show (e.g. an image that is not 2-D and real)."""


class SaveError(StemExplorerError, OSError):
    """Results or an export cannot be written where asked (a folder, no permission, a
    read-only or full file system)."""


class CheckpointError(StemExplorerError, ValueError):
    """A checkpoint file cannot be used: it is not a checkpoint of stem_explorer, or
    the job cannot be checkpointed (data without a file, state that cannot be stored)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was left unused (made for another data set or plan, or damaged):
    the job starts from the beginning and replaces it."""


class ResultNameError(StemExplorerError, ValueError):
    """A result or analysis name cannot name an array in a results file."""


class AcquisitionError(StemExplorerError, RuntimeError):
    """A live acquisition failed: the detector refused a command, the stream broke off
    or does not match the configured scan."""
