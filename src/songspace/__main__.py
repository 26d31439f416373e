"""`python -m songspace ...`: the same as the `songspace` command."""
import sys

from songspace.cli import main

if __name__ == "__main__":
    sys.exit(main())
