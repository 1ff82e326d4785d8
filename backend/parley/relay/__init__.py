"""The Parley relay: authenticated WebSocket front door in front of a Realtime provider (local or OpenAI)."""
