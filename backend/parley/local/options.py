"""``ProtocolOptions``: what the local protocol (``parley.local.protocol``) reads from the settings, read once by the
connection and passed in; the defaults are the server's."""

from __future__ import annotations

from dataclasses import dataclass

from parley.settings import Settings


@dataclass(frozen=True, slots=True)
class ProtocolOptions:
    max_event_bytes: int = 1 << 20
    max_append_ms: int = 10_000
    max_buffer_s: int = 120
    llm_max_tokens: int = 256
    language: str = "en"  # the session language by default (settings.language, checked)
    partial_interval_ms: int = 0  # periodic partial transcripts while speaking (0: only at pause onsets)
    preemptive_generation: bool = True
    client_grace_ms: int = 0  # a client that answers turns itself gets this long to add context to a pause
    parley_events: bool = True  # False: a strict GA client, Parley's own parley.* events are not sent

    @classmethod
    def from_settings(cls, settings: Settings, *, parley_events: bool = True) -> ProtocolOptions:
        return cls(
            max_event_bytes=settings.max_event_bytes,
            max_append_ms=settings.max_append_audio_ms,
            max_buffer_s=settings.max_buffer_audio_s,
            llm_max_tokens=settings.llm_max_tokens,
            language=settings.language,
            partial_interval_ms=settings.stt_partial_interval_ms,
            preemptive_generation=settings.preemptive_generation,
            client_grace_ms=settings.preemptive_client_grace_ms,
            parley_events=parley_events,
        )
