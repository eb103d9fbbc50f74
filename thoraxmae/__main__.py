"""`python -m thoraxmae` is the `thoraxmae` command."""
import sys

from thoraxmae.cli import main

sys.exit(main())
