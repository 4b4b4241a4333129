"""One module per `carewatch` subcommand; each defines `register(subparsers)`."""
