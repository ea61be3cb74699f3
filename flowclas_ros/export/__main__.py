"""``python -m flowclas_ros.export`` = ``flowclas-export`` (the runtime exports a checkpoint this way)."""

import sys

from flowclas_ros.export.cli import main

sys.exit(main())
