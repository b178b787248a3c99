import sys

from bytelocker.cli import main

sys.exit(main())
