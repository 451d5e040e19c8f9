"""One module per `tunesmith` subcommand: parse arguments, call the library, print."""
