"""`python -m slsviz` runs the command-line interface."""

from slsviz.cli import main

raise SystemExit(main())
