from iglubuild.cli import main

raise SystemExit(main())
