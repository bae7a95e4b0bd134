from hpm_ray.cli import main

raise SystemExit(main())
