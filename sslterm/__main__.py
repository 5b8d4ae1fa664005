import sys

from sslterm.cli import main

sys.exit(main())
