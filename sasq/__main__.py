from sasq.tools.cli import main

raise SystemExit(main())
