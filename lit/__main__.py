"""`python -m lit` is the `lit` command."""

from lit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
