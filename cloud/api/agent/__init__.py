"""The agent protocol, /agent/v1: enrol, token, poll, acks, job events, metadata."""
