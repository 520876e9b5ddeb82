"""``python -m nas2deploy`` (and ``torchrun -m nas2deploy``) run the CLI."""

from nas2deploy.cli import main

main()
