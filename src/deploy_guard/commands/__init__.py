"""Command modules: one per ``deploy-guard`` subcommand, imported lazily by the CLI."""
