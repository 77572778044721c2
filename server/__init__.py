"""Engine loop, sessions, streams, drivers, HTTP API and the command line."""
