import sys

from rinuxfs.cli import main

sys.exit(main())
