"""Parley's local voice server: OpenAI Realtime over WebSocket, backed by faster-whisper -> an LLM server -> Piper."""
