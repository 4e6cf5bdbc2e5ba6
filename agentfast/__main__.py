import sys

from agentfast.cli import main

sys.exit(main())
