import sys

from ssrp.cli import main

sys.exit(main())
