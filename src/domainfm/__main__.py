import sys

from domainfm.cli import main

sys.exit(main())
