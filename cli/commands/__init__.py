"""The commands: each parses its options, calls the engine, builds one data object and hands it to `output`."""
