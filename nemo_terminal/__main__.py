import sys

from nemo_terminal.cli import main

sys.exit(main())
