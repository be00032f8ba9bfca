from locore.cli import main

raise SystemExit(main())
