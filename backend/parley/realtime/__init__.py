"""The OpenAI Realtime (GA) wire protocol: ids, client-event parsing, server-event builders, audio codecs."""
