import sys

from tcmu_harness.cli import main

sys.exit(main())
