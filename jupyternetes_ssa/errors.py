"""Errors that say which object, which field, and what to do about it."""

from __future__ import annotations


class JupyternetesError(Exception):
    """Base error: `subject` names the object, `path` the field, `fix` what the user should do."""

    reason = "Error"

    def __init__(self, message: str, *, subject: str = "", path: str = "", fix: str = ""):
        self.message = message
        self.subject = subject
        self.path = path
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = " ".join(p for p in (self.subject, f"at {self.path}" if self.path else "") if p)
        text = f"{where}: {self.message}" if where else self.message
        fix = self.fix[:1].upper() + self.fix[1:]
        return f"{text}. {fix}" if fix else text


class RenderError(JupyternetesError):
    """A template cannot be rendered for an instance (unknown variable, bad name, bad brace...)."""

    reason = "RenderFailed"


class TemplateNotFound(JupyternetesError):
    reason = "TemplateNotFound"


class TemplateNotAllowed(JupyternetesError):
    reason = "TemplateNotAllowed"


class KindNotAllowed(JupyternetesError):
    reason = "KindNotAllowed"


class BadSettings(JupyternetesError):
    """The reconciler's own options cannot work (e.g. --allow-kind of an unknown kind)."""

    reason = "BadSettings"
