"""Audio and subtitle formats: header durations, chunking, WebVTT/SRT."""
