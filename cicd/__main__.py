from cicd.cli.main import main

raise SystemExit(main())
