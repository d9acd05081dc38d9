"""`python -m vqkit ...` (and `torchrun ... -m vqkit train ...` for several processes)."""
from .cli import main

raise SystemExit(main())
