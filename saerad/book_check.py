"""``python -m saerad.book_check``: the Makefile's name for :mod:`saerad.book.check`, kept working here."""

import sys

from saerad.book.check import (  # noqa: F401  (re-exported for the callers of the old module)
    CHECK_COLUMNS,
    check_book,
    chapter_pages,
    find_chromium,
    inspect_pages,
    main,
    toc_pages,
)

if __name__ == "__main__":
    sys.exit(main())
