from saerad.book.solutions import main

raise SystemExit(main())
