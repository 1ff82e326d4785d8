"""Parley's small error tree, and the one place that turns an error into a protocol ``error`` event.

Every error carries an OpenAI-Realtime-style ``type`` (``invalid_request_error`` / ``server_error``), a stable
``code`` clients can switch on, a human message, and ``retryable`` (would the same request work later?).
"""

from __future__ import annotations

from typing import Any

from parley.realtime.ids import new_id


class ParleyError(Exception):
    type: str = "server_error"
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(ParleyError):
    """The client sent something we cannot act on. The session lives on."""

    type = "invalid_request_error"
    code = "invalid_request"


class NotAllowed(InvalidRequest):
    code = "event_not_allowed"


class DependencyError(ParleyError):
    """A dependency (LLM server, STT, TTS, upstream provider, Redis) failed. Retry later."""

    type = "server_error"
    code = "dependency_error"
    retryable = True


class LLMUnavailable(DependencyError):
    code = "llm_unavailable"


class STTFailed(DependencyError):
    code = "transcription_failed"


class TTSFailed(DependencyError):
    code = "tts_failed"


class UpstreamUnavailable(DependencyError):
    code = "upstream_unavailable"


class LimitExceeded(ParleyError):
    type = "invalid_request_error"
    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class AuthError(ParleyError):
    type = "invalid_request_error"
    code = "unauthorized"
    status = 401


class Forbidden(AuthError):
    code = "forbidden"
    status = 403


def error_event(err: BaseException, *, event_id: str | None = None) -> dict[str, Any]:
    """The protocol ``error`` event for any exception (unknown ones become a generic server error)."""
    if isinstance(err, ParleyError):
        body: dict[str, Any] = {
            "type": err.type,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "event_id": event_id,
        }
        if err.retryable:
            body["retryable"] = True
    else:
        body = {
            "type": "server_error",
            "code": "internal_error",
            "message": "internal error",
            "param": None,
            "event_id": event_id,
        }
    return {"type": "error", "event_id": new_id("event"), "error": body}
