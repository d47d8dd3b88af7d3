"""``python -m gpu_stack_runtime.launcher``: the same as the gpu-stack-launch command."""

import sys

from gpu_stack_runtime.launcher.cli import main

sys.exit(main())
