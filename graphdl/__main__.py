import sys

from graphdl.cli import main

sys.exit(main())
