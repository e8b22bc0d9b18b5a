import sys

from relay_local.cli import main

sys.exit(main())
