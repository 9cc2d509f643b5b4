from banger.daemon.main import main

raise SystemExit(main())
