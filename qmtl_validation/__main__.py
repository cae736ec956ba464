import sys

from qmtl_validation.cli import main

sys.exit(main())
