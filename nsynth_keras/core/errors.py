"""The project's errors: one base class, so every command turns any of them into one line and exit code 2."""

from __future__ import annotations


class ProjectError(ValueError):
    """Bad input or a refused action, in a sentence that names the file or flag and what to do."""


class DataError(ProjectError):
    """A data source that cannot be read; the message says what to do."""


class SettingsError(ProjectError):
    """A setting (flag, config.json field or config made in code) out of its bounds or at odds with another."""


class RunError(ProjectError):
    """A run folder, model file or output path that cannot be used."""


class DivergedError(RunError):
    """Training produced a NaN or infinite loss or weights: the run is worthless, not resumable."""

    def __init__(self, run_name: str, what: str):
        super().__init__(f"run {run_name}: {what}; training diverged (try a lower --learning-rate) and nothing was "
                         "written as a finished run")


class AudioError(ProjectError):
    """A wav file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
