"""``python -m deploy_guard`` runs the CLI."""

from deploy_guard.cli import main

main()
