"""`python -m vqkit.cli ...` keeps working now that the command line is a package (as `python -m vqkit`)."""
from . import main

raise SystemExit(main())
