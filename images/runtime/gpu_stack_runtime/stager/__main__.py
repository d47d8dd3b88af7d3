from gpu_stack_runtime.stager.cli import main

raise SystemExit(main())
