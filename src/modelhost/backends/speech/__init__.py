"""Speech backends: recognition, synthesis, voice activity, speakers and diarization."""
