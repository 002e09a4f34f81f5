"""Unit level: pure logic and the runtime's pure parts; no servers, runs in seconds."""
